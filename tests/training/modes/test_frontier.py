"""The frontier: every planner's point measured on the same model (MemTracker bytes, FlopCounterMode FLOPs), the
analyzed plan's predictions equal to its measurements, torch's SAC ILP within the same byte target, fake and real steps
counting the same, and the report's verdict on the target."""

from __future__ import annotations

import functools

import pytest
from training.tiny_models import tiny_model

from bwsk.training.experiments import frontier_report
from bwsk.training.modes.frontier import ANALYZED, TORCH_SAC, FrontierPoint, measure_frontier

pytest.importorskip("pulp")  # torch's SAC ILP solver: the dev and sac extras install it

pytestmark = pytest.mark.slow

BUDGETS = [0.3, 0.6]
LOSS_BYTES = 64  # the point is measured with the loss alive: its scalars are not the model's activations


@functools.cache
def points(family: str, fake: bool) -> list[FrontierPoint]:
    config = tiny_model(family, layers=2, hidden=64).config
    return measure_frontier(config, batch=2, seq=32, budgets=BUDGETS, fake=fake, name=family)


@pytest.mark.parametrize("family", ["neox-parallel", pytest.param("llama", marks=pytest.mark.sweep)])
def test_every_point_is_measured_and_the_analyzed_prediction_holds(family):
    found = points(family, fake=False)
    by = {(p.planner, p.budget): p for p in found}
    assert set(by) == {("conventional", None), ("checkpoint", None), ("reversible", None)} | {
        (planner, b) for planner in (ANALYZED, TORCH_SAC) for b in BUDGETS
    }
    conventional, checkpoint = by["conventional", None], by["checkpoint", None]
    assert conventional.recompute_flops == 0 and conventional.fraction == 1
    for budget in BUDGETS:
        ours, theirs = by[ANALYZED, budget], by[TORCH_SAC, budget]
        assert ours.predicted_bytes <= ours.target_bytes
        assert 0 <= ours.activation_bytes - ours.predicted_bytes <= LOSS_BYTES
        assert ours.recompute_flops == ours.predicted_recompute_flops
        assert theirs.target_bytes == ours.target_bytes and theirs.activation_bytes <= theirs.target_bytes + LOSS_BYTES
        for point in (ours, theirs):
            assert checkpoint.activation_bytes <= point.activation_bytes < conventional.activation_bytes
            assert 0 <= point.recompute_flops <= checkpoint.recompute_flops
    assert by[ANALYZED, 0.6].recompute_flops <= by[ANALYZED, 0.3].recompute_flops
    assert by["reversible", None].recompute_flops > 0


def test_fake_steps_count_what_real_steps_count():
    real, fake = points("neox-parallel", fake=False), points("neox-parallel", fake=True)
    assert [(p.planner, p.budget, p.activation_bytes, p.recompute_flops) for p in fake] == [
        (p.planner, p.budget, p.activation_bytes, p.recompute_flops) for p in real
    ]


def point(planner: str, budget: float | None, recompute: int, kept: int = 50) -> FrontierPoint:
    return FrontierPoint("m", planner, budget, 60, kept, recompute, kept, recompute, 100, 1000)


def test_the_verdict_needs_no_more_recompute_everywhere_and_a_fifth_less_somewhere():
    met = [point(ANALYZED, 0.3, 70), point(TORCH_SAC, 0.3, 100), point(ANALYZED, 0.5, 40), point(TORCH_SAC, 0.5, 40)]
    assert frontier_report.verdict(met) == (True, "no more recompute than the ILP at 2 of 2 budgets; at least 20% less at 0.3")
    above = [point(ANALYZED, 0.3, 70), point(TORCH_SAC, 0.3, 100), point(ANALYZED, 0.5, 41), point(TORCH_SAC, 0.5, 40)]
    ok, said = frontier_report.verdict(above)
    assert not ok and "(more at 0.5)" in said
    nothing_left = [point(ANALYZED, 0.5, 0), point(TORCH_SAC, 0.5, 0)]  # no recompute on either side: no saving
    assert frontier_report.verdict(nothing_left) == (False, "no more recompute than the ILP at 1 of 1 budgets; at least 20% less at none")
    close = [point(ANALYZED, 0.3, 90), point(TORCH_SAC, 0.3, 100), point(ANALYZED, 0.9, 0), point(TORCH_SAC, 0.9, 50)]
    assert frontier_report.verdict(close) == (False, "no more recompute than the ILP at 1 of 1 budgets; at least 20% less at none")


def test_the_table_has_a_row_per_budget_and_mode():
    found = points("neox-parallel", fake=False)
    lines = frontier_report.table_lines(found)
    assert len(lines) == 2 + len(BUDGETS) + 3
    assert lines[2].startswith("| 0.3 |") and lines[-1].startswith("| reversible |")
    assert frontier_report.plot({"neox-parallel": found})[:8] == b"\x89PNG\r\n\x1a\n"
