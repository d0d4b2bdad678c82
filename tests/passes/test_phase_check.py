"""The phase-level check: every S-phase, run as one function, is injective in each activation input."""

from __future__ import annotations

import pytest
import torch
from lambda_module import Lambda
from torch import nn
from zoo_exports import sweep_after_first, tiny_program

import bwsk
from bwsk.frontend.compile import state_tensors
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify import classify_call, read_outputs
from bwsk.passes.classify.phase_check import capture, check_phases
from bwsk.passes.manager import PassManager
from bwsk.passes.partition import Partition, partition

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out


class Crafted(nn.Module):
    """x*x (full-rank Jacobian, yet x and -x collide) and x - x (always 0), each then mixed by an invertible map."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(6, 6)

    def forward(self, x):
        y = torch.tanh(x)
        return self.mix(y * y), self.mix(y - y + 1.0)


def per_call_analysis(program) -> Analysis:
    """The partition the per-call verdicts alone would give (no shared-ancestor rule)."""
    analysis = Analysis.of(program)
    flow, read = analysis.flow, read_outputs(analysis.flow)
    old = {call.index: classify_call(flow, call, read).kind == "S" for call in flow.calls}
    analysis.results[Partition] = partition(flow, old)
    return analysis


def test_per_call_s_phases_fail_the_phase_check_on_shared_operands():
    program = bwsk.lower_module(Crafted(), (torch.randn(3, 6),))
    checks = check_phases(per_call_analysis(program))
    failed = [c for c in checks if c.outcome == "FAILED"]
    assert failed, checks
    evidence = " ".join(c.evidence for c in failed)
    assert "outputs equal" in evidence or "jacobian rank" in evidence


def test_sound_verdicts_pass_the_phase_check_on_the_crafted_program():
    program = bwsk.lower_module(Crafted(), (torch.randn(3, 6),))
    analysis = PassManager([Partition]).run(Analysis.of(program))
    checks = check_phases(analysis)
    assert checks and all(c.outcome == "ok" for c in checks), checks


def test_collision_scan_sees_what_the_jacobian_misses():
    """x*x as one per-call S phase: its Jacobian 2x has full rank; the scan finds two elements with equal squares."""
    checks = check_phases(per_call_analysis(bwsk.lower_module(Lambda(lambda x: x * x), (torch.randn(2, 3),))))
    assert [c.outcome for c in checks] == ["FAILED"]
    assert checks[0].evidence.startswith("jacobian rank 6/6 but element") and "outputs equal" in checks[0].evidence


def test_strictly_monotone_phase_passes_the_scan():
    """tanh(x) + x is injective: as one phase it passes (no false collision), though classify calls its add K conservatively."""
    checks = check_phases(per_call_analysis(bwsk.lower_module(Lambda(lambda x: torch.tanh(x) + x), (torch.randn(2, 3),))))
    assert [c.outcome for c in checks] == ["ok"]


@pytest.mark.parametrize("name", sweep_after_first(["pythia-70m", "gpt2"]))
def test_every_s_phase_of_a_tiny_model_is_injective_as_a_whole(name):
    checks = check_phases(PassManager([Partition]).run(Analysis.of(tiny_program(name))))
    outcomes = [c.outcome for c in checks]
    assert "FAILED" not in outcomes, [c for c in checks if c.outcome == "FAILED"]
    assert outcomes.count("ok") >= 5


class ZeroScaleNormThenMix(nn.Module):
    """p @ batch_norm(x), then an invertible map: S in p while the norm's output has full rank.

    With the norm's scale zero (MobileViT's initialisation draws BatchNorm scales of about 0.02, and
    its activations vanish to 0 in a few layers) that output is all zero at the model's weights.
    """

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.mix = nn.Linear(4, 4)
        with torch.no_grad():
            self.norm.weight.zero_()
            self.norm.bias.zero_()

    def forward(self, p, x):
        return self.mix(p @ self.norm(x))


def zero_scale_analysis() -> Analysis:
    model = ZeroScaleNormThenMix().eval()
    exported = torch.export.export(model, (torch.randn(4, 4), torch.randn(4, 4)))
    program = bwsk.lower(exported)
    return PassManager([Partition]).run(Analysis.of(program, weights=state_tensors(exported.run_decompositions())))


def test_a_phase_erasing_only_at_degenerate_model_weights_is_undecided_not_failed():
    """At the model's weights p @ 0 erases p; at random state (a positive running variance, else nan) p is recovered."""
    analysis = zero_scale_analysis()
    (mm,) = [c for c in analysis.flow.calls if c.target == "aten.mm.default"]
    assert analysis.classes[mm.index].kind == "S"
    (in_p,) = [c for c in check_phases(analysis) if c.input == "%p"]
    assert in_p.outcome == "undecided", in_p
    assert in_p.evidence.startswith("jacobian rank 0/16 at the model's weights") and "16/16" in in_p.evidence


@pytest.mark.parametrize("seed", range(4))
def test_random_state_is_drawn_in_the_domain_the_rules_assume(seed):
    analysis = zero_scale_analysis()
    flow = analysis.flow
    captured = capture(analysis.program, flow, None, analysis.sizes, seed=seed)
    (norm,) = [c for c in flow.calls if "batch_norm" in c.target]
    running_var = captured.values[norm.inputs[4]]
    assert running_var.shape == (4,) and bool((running_var > 0).all()), running_var
    assert torch.isfinite(captured.values[flow.outputs[0]]).all()
