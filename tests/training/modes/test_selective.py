"""The analyzed mode's budget: bytes or a fraction of conventional activation memory, made a byte target that the
measured activation bytes stay within, gradients equal conventional's bit for bit, the knob monotone, the floor refused
below in one line, and the plan saying what it decided and why."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch

from bwsk.errors import BwskError
from bwsk.frontend.zoo import build, model_inputs
from bwsk.passes.memory import Memory
from bwsk.render.units import human_bytes
from bwsk.training.blocks import block_paths
from bwsk.training.choices import DEFAULT_BUDGET
from bwsk.training.modes.apply import analyze_model, applied_mode, apply_mode
from bwsk.training.modes.measure import activation_bytes, loss_gradients
from bwsk.training.modes.selective import BY_ANALYSIS, plan_selective

pytestmark = pytest.mark.slow  # whole-model steps: `make test` (CI) runs them, `make test-fast` leaves them out

BUDGETS = [0.3, 0.5, 0.8, 1.0, "48KiB", "100KiB", 200 * 1024]


@functools.cache
def tiny_pythia():
    """A 2-layer tiny Pythia, its input (batch 2 x 16) and its analysis, shared by the module's tests."""
    model = build("pythia-70m", tiny=True, layers=2, device="cpu", seed=3)
    (ids,) = model_inputs(model, batch=2, seq=16, seed=5)
    return model, ids, analyze_model(model, (ids,))


def conventional_bytes() -> int:
    return tiny_pythia()[2].result(Memory).modes["conventional"].stored


def plan(budget):
    model, _, analysis = tiny_pythia()
    return plan_selective(analysis, block_paths(model), budget=budget)


@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_measured_activation_bytes_stay_within_the_budget(budget):
    model, ids, analysis = tiny_pythia()
    applied = apply_mode(copy.deepcopy(model), "analyzed", analysis=analysis, budget=budget)
    made = applied_mode(applied).plan
    expected = int(budget * conventional_bytes()) if isinstance(budget, float) else made.target_bytes
    assert made.target_bytes == expected and made.floor_bytes <= made.predicted_bytes <= made.target_bytes
    assert activation_bytes(applied, ids) <= made.target_bytes
    assert made.alignment.unmatched == 0 and made.alignment.matched > 0  # the run followed the plan


def test_a_plan_filled_to_the_byte_is_exceeded_by_at_most_the_unread_block_arguments():
    """At the floor itself the measured bytes may pass the target by what the blocks receive and do not read (the
    Pythia layers' cache positions, 8 bytes per token; see the module docstring of `selective`)."""
    model, ids, analysis = tiny_pythia()
    applied = apply_mode(copy.deepcopy(model), "analyzed", analysis=analysis, budget=plan(1.0).floor_bytes)
    made = applied_mode(applied).plan
    assert made.predicted_bytes == made.target_bytes == made.floor_bytes
    assert activation_bytes(applied, ids) <= made.target_bytes + 8 * ids.shape[1]


def test_byte_budgets_are_the_target_as_given():
    assert plan("48KiB").target_bytes == 48 * 1024 and plan(200 * 1024).target_bytes == 200 * 1024


@pytest.mark.parametrize("budget", ["40KiB", 0.5, 1.0], ids=str)
def test_gradients_equal_conventional_exactly(budget):
    model, ids, analysis = tiny_pythia()
    expected = loss_gradients(model, ids)
    got = loss_gradients(apply_mode(copy.deepcopy(model), "analyzed", analysis=analysis, budget=budget), ids)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_a_larger_budget_stores_no_fewer_bytes_and_recomputes_no_more():
    floor = plan(1.0).floor_bytes
    sizes = sorted(
        {floor, floor + 1, *(int(f * conventional_bytes()) for f in (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)), 10 * conventional_bytes()}
    )
    plans = [plan(size) for size in sizes]
    stored = [p.predicted_bytes for p in plans]
    recomputed = [p.recompute_flops for p in plans]
    assert stored == sorted(stored) and recomputed == sorted(recomputed, reverse=True)
    assert stored[0] == floor < stored[-1] and recomputed[0] > recomputed[-1]
    kept = [{id(c.unit) for c in p.choices if c.stored} for p in plans]
    assert all(smaller <= larger for smaller, larger in zip(kept, kept[1:]))  # each budget keeps what a smaller one kept


def test_a_budget_below_the_floor_is_refused_in_one_line_naming_the_floor():
    floor = plan(1.0).floor_bytes
    for budget in (floor - 1, 0.01):
        with pytest.raises(BwskError, match=f"below its floor of {human_bytes(floor)}") as refused:
            plan(budget)
        assert "\n" not in str(refused.value)
    model, _, analysis = tiny_pythia()
    with pytest.raises(BwskError, match="neither bytes with a unit"):
        apply_mode(copy.deepcopy(model), "analyzed", analysis=analysis, budget="lots")


def test_the_plan_reports_what_the_analysis_and_the_budget_decided():
    """At the S/K plan's own bytes every decision is the analysis's; below it the budget recomputes units the analysis
    stores (K-barrier outputs), above it the budget stores what the analysis recomputes, dearest per byte first."""
    model, _, analysis = tiny_pythia()
    at = plan(plan(1.0).analysis_bytes)
    free = {id(c.unit) for c in plan(at.floor_bytes).choices if c.stored}  # stored at the floor: they add no bytes
    assert at.predicted_bytes == at.analysis_bytes and not at.dropped and {id(unit) for unit in at.kept} <= free
    assert all(c.stored == (c.unit.analyzed == "store") for c in at.choices if c.by == BY_ANALYSIS)
    stored_ops = {analysis.calls[c.unit.call].target for c in at.choices if c.stored and c.by == BY_ANALYSIS}
    assert {"aten.softmax.int", "aten.gelu.default", "aten.layer_norm.default"} <= stored_ops  # K-barriers: erased, stored
    below = plan((at.floor_bytes + at.analysis_bytes) // 2)
    assert below.dropped and all(unit.analyzed == "store" for unit in below.dropped)
    above = plan(0.8)
    assert above.kept and all(unit.analyzed == "recompute" for unit in above.kept)

    def per_byte(unit) -> float:
        return analysis.calls[unit.call].flops / unit.bytes

    kept = [unit for unit in above.kept if id(unit) not in free]
    left = [c.unit for c in above.choices if not c.stored and c.by == BY_ANALYSIS and c.unit.analyzed == "recompute"]
    assert {analysis.calls[unit.call].target for unit in kept} <= {"aten.linear.default", "aten.matmul.default"}
    assert min(map(per_byte, kept)) >= max(map(per_byte, left))  # the budget keeps the dearest to recompute per byte
    assert below.recompute_flops >= at.recompute_flops > above.recompute_flops
    summary = json.loads(json.dumps(above.summary()))
    assert summary["budget"] == 0.8 and summary["target_bytes"] == int(0.8 * conventional_bytes())
    assert summary["predicted_bytes"] == above.predicted_bytes and summary["recompute_flops"] == above.recompute_flops
    assert summary["decisions"]["stored by budget"]["units"] == len(above.kept)


def test_the_default_budget_is_half_of_conventional():
    made = plan(DEFAULT_BUDGET)
    assert DEFAULT_BUDGET == 0.5 and made.budget == 0.5 and made.target_bytes == conventional_bytes() // 2
