"""The phase-level check: every S-phase, run as one function, is injective in each activation input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bwsk
from bwsk.frontend.compile import compile_source
from bwsk.passes import PassManager
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify import classify_call, read_outputs
from bwsk.passes.classify.phase_check import check_phases
from bwsk.passes.partition import partition


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
    analysis.results["partition"] = partition(flow, old)
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
    analysis = PassManager(["partition"]).run(Analysis.of(program))
    checks = check_phases(analysis)
    assert checks and all(c.outcome == "ok" for c in checks), checks


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_collision_scan_sees_what_the_jacobian_misses():
    """x*x as one per-call S phase: its Jacobian 2x has full rank; the scan finds two elements with equal squares."""
    checks = check_phases(per_call_analysis(bwsk.lower_module(Lambda(lambda x: x * x), (torch.randn(2, 3),))))
    assert [c.outcome for c in checks] == ["FAILED"]
    assert checks[0].evidence.startswith("jacobian rank 6/6 but element") and "outputs equal" in checks[0].evidence


def test_strictly_monotone_phase_passes_the_scan():
    """tanh(x) + x is injective: as one phase it passes (no false collision), though classify calls its add K conservatively."""
    checks = check_phases(per_call_analysis(bwsk.lower_module(Lambda(lambda x: torch.tanh(x) + x), (torch.randn(2, 3),))))
    assert [c.outcome for c in checks] == ["ok"]


@pytest.mark.parametrize("name", ["gpt2", "pythia-70m"])
def test_every_s_phase_of_a_tiny_model_is_injective_as_a_whole(name):
    program = compile_source(name, tiny=True, layers=1, seq=8, device="meta", progress=False).program
    checks = check_phases(PassManager(["partition"]).run(Analysis.of(program)))
    outcomes = [c.outcome for c in checks]
    assert "FAILED" not in outcomes, [c for c in checks if c.outcome == "FAILED"]
    assert outcomes.count("ok") >= 5
