"""Drift control: measured rebuild error against an independent rebuild, sampling, escalation, anchor planning within the
memory cap, recompute fallback and calibration."""

from __future__ import annotations

import pytest
import torch
from training.toy_stack import toy_stack

from bwsk.training.choices import DEFAULT_DRIFT_TOLERANCE
from bwsk.training.reversible.drift import (
    DriftMonitor,
    DriftProbe,
    Segment,
    increments,
    max_segments,
    plan_segments,
    plan_within,
    relative_error,
    sampled_blocks,
    segments_from_anchors,
)

FP32 = dict(streams=torch.float32)  # a stack whose rebuild is inexact, for the machinery to have something to measure


def step(root, stack, seed: int = 0) -> dict[str, torch.Tensor]:
    root.zero_grad(set_to_none=True)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(seed))
    stack(x, {}).square().sum().backward()
    return {n: p.grad.clone() for n, p in root.named_parameters()}


def independent_rebuild_errors(stack, x: torch.Tensor) -> dict[int, float]:
    """Run the blocks forward keeping inputs (fp32 streams), then invert them with plain torch arithmetic."""
    x1 = x2 = x.float()
    true = []
    with torch.no_grad():
        for block in stack.blocks:
            true.append((x1, x2))
            x1, x2, _ = block.forward(x1, x2, x2, {}, torch.float32, None, None)  # toy halves run their own norm: n2 is x2
        errors = {}
        for block in reversed(stack.blocks):
            x2 = x2 - block.g(x1, {}, torch.float32)
            x1 = x1 - block.f(x2, {}, torch.float32)
            errors[block.index] = relative_error((x1, x2), true[block.index])
    return errors


def test_measured_drift_is_the_rebuild_error():
    root, stack = toy_stack(6, dropout=0.0, gain=3.0, monitor=DriftMonitor(every=1, blocks="all", rows=None), **FP32)
    step(root, stack)
    report = stack.monitor.last
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    expected = independent_rebuild_errors(stack, x)
    assert sorted(report.errors) == list(range(6)) and report.complete
    for block, error in expected.items():
        assert report.errors[block] == pytest.approx(error, rel=1e-6, abs=1e-12)
    assert 0 < report.max_error < 1e-5


def test_float64_streams_rebuild_exactly_where_fp32_streams_drift():
    errors = {}
    for streams in (torch.float32, torch.float64):
        root, stack = toy_stack(6, dropout=0.3, gain=1.5, monitor=DriftMonitor(every=1, blocks="all"), streams=streams)
        step(root, stack)
        errors[streams] = stack.monitor.last.max_error
    assert errors[torch.float32] > 1e-8
    assert errors[torch.float64] == 0.0


def test_drift_is_measured_every_n_steps_on_the_requested_blocks():
    root, stack = toy_stack(4, monitor=DriftMonitor(every=3, blocks=[1, 3]))
    measured = []
    for i in range(5):
        step(root, stack, i)
        measured.append(stack.monitor.last.step)
    assert measured == [0, 0, 0, 3, 3]
    assert sorted(stack.monitor.last.errors) == [1, 3] and not stack.monitor.last.complete


def test_sampled_blocks_are_each_segments_first_and_a_spread():
    segments = [Segment(0, 10), Segment(10, 17), Segment(17, 48)]
    assert sampled_blocks(48, segments) == {0, 10, 16, 17, 31, 47}
    assert sampled_blocks(3, [Segment(0, 3)]) == {0, 1, 2}
    assert sampled_blocks(1, [Segment(0, 1)]) == {0}


def test_a_probe_keeps_a_few_rows_and_measures_on_them():
    probe = DriftProbe(0, frozenset({0}), complete=True, rows=4)
    true = torch.randn(3, 64, 8, dtype=torch.float64)
    probe.keep(0, true, true)
    assert probe.kept[0][0].shape == (4, 8) and probe.kept[0][0].untyped_storage().nbytes() == 4 * 8 * 8
    rebuilt = true.clone()
    rebuilt.view(-1, 8)[191] += 1.0  # the last row is always sampled
    rebuilt.view(-1, 8)[1] += 1.0  # row 1 is not (rows 0, 64, 127, 191 are)
    probe.compare(0, rebuilt, true)  # x1 rebuilt with an error, x2 exact
    kept_rows = true.view(-1, 8)[[0, 64, 127, 191]]
    expected = 8**0.5 / (2 * float(kept_rows.square().sum())) ** 0.5
    assert probe.errors[0] == pytest.approx(expected, rel=1e-12) and probe.done
    few = DriftProbe(0, frozenset({0}), complete=True, rows=64)
    few.keep(0, true, true)
    assert few.kept[0][0].shape == (12, 8)  # at most 1/16 of the 192 rows


def test_a_sampled_report_over_tolerance_makes_the_next_step_measure_every_block():
    root, stack = toy_stack(8, dropout=0.0, gain=6.0, norm=False, monitor=DriftMonitor(every=100, tolerance=1e-12), **FP32)
    step(root, stack)
    first = stack.monitor.last
    assert not first.complete and first.max_error > 1e-12 and stack.segments == [Segment(0, 8)]
    step(root, stack)
    second = stack.monitor.last
    assert second.complete and second.step == 1 and sorted(second.errors) == list(range(8))
    step(root, stack)  # re-planned from the complete report before this step: every block's own error is over 1e-12
    assert stack.plan is not None and stack.segments == [Segment(0, 8, "checkpoint")]
    step(root, stack)
    assert stack.monitor.last.step == 1  # back to the schedule: no new probe until step 100


def test_segments_from_anchors():
    assert segments_from_anchors(5, None) == [Segment(0, 5)]
    assert segments_from_anchors(5, 2) == [Segment(0, 2), Segment(2, 4), Segment(4, 5)]
    assert segments_from_anchors(5, [3, 1]) == [Segment(0, 1), Segment(1, 3), Segment(3, 5)]
    with pytest.raises(ValueError):
        segments_from_anchors(5, [5])


def test_increments_are_each_blocks_share_within_its_segment():
    segments = [Segment(0, 2), Segment(2, 4)]
    own = increments({0: 5e-3, 1: 2e-3, 2: 4e-3, 3: 1e-3}, segments)
    assert own == pytest.approx({0: 3e-3, 1: 2e-3, 2: 3e-3, 3: 1e-3})


def test_plan_places_anchors_where_the_error_would_pass_the_tolerance():
    own = {0: 4e-4, 1: 4e-4, 2: 4e-4, 3: 4e-4}
    assert plan_segments(4, own, 1e-3) == [Segment(0, 2), Segment(2, 4)]
    assert plan_segments(4, own, 1e-2) == [Segment(0, 4)]


def test_plan_falls_back_to_recomputation_for_blocks_over_the_tolerance():
    own = {0: 1e-4, 1: 5e-3, 2: 6e-3, 3: 1e-4}
    assert plan_segments(4, own, 1e-3) == [Segment(0, 1), Segment(1, 3, "checkpoint"), Segment(3, 4)]
    assert plan_segments(4, {}, 1e-3, checkpointed=[0]) == [Segment(0, 1, "checkpoint"), Segment(1, 4)]


def test_the_memory_cap_is_three_times_two_fp32_pairs():
    assert max_segments(torch.float64) == 3 and max_segments(torch.float32) == 6


def test_a_plan_over_the_cap_relaxes_its_tolerance_and_says_so():
    own = dict.fromkeys(range(12), 1e-3)
    plan = plan_within(12, own, 1e-3, limit=12)
    assert len(plan.segments) == 12 and plan.within(1e-3)
    capped = plan_within(12, own, 1e-3, limit=3)
    assert len(capped.segments) <= 3 and not capped.within(1e-3)
    assert capped.tolerance == 4e-3 and capped.segments == [Segment(0, 4), Segment(4, 8), Segment(8, 12)]


def test_an_ill_conditioned_stack_is_re_planned_within_tolerance_and_keeps_its_gradients():
    tolerance = 1e-4
    monitor = DriftMonitor(every=1, blocks="all", tolerance=tolerance)
    root, stack = toy_stack(8, dropout=0.0, gain=6.0, norm=False, monitor=monitor, **FP32)
    step(root, stack)
    first = stack.monitor.last
    assert first.max_error > tolerance
    got = step(root, stack)
    assert stack.segments != [Segment(0, 8)] and len(stack.segments) <= max_segments(torch.float32)
    assert stack.monitor.last.max_error <= tolerance
    stack.plain = True
    want = step(root, stack)
    for name, w in want.items():
        assert float((got[name] - w).norm() / w.norm()) <= 10 * tolerance, name


def test_calibration_places_anchors_and_leaves_grads_rng_and_schedule_alone():
    monitor = DriftMonitor(every=5, tolerance=1e-6)
    root, stack = toy_stack(8, dropout=0.3, gain=6.0, norm=False, monitor=monitor, **FP32)
    x = torch.randn(2, 5, 16)
    torch.manual_seed(11)
    stack.calibrate(lambda: stack(x, {}))
    after = torch.rand(4)
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(4))
    assert stack.monitor is monitor and monitor.step == 0 and monitor.last is None
    assert all(p.grad is None for p in root.parameters())
    assert sorted(stack.calibration) == list(range(8)) and max(stack.calibration.values()) > 1e-6
    assert len(stack.segments) > 1 and stack.plan is not None


def test_calibration_of_an_exact_stack_places_nothing():
    root, stack = toy_stack(8, dropout=0.3, gain=1.5, monitor=DriftMonitor())
    stack.calibrate(lambda: stack(torch.randn(2, 5, 16), {}))
    assert max(stack.calibration.values()) == 0.0 and stack.segments == [Segment(0, 8)] and stack.plan is None


def test_the_default_monitor_is_the_safe_one():
    monitor = DriftMonitor()
    assert monitor.tolerance == DEFAULT_DRIFT_TOLERANCE and monitor.blocks == "sampled" and monitor.every == 100
    with pytest.raises(ValueError, match="tolerance > 0"):
        DriftMonitor(tolerance=0.0)
    with pytest.raises(ValueError, match="'sampled', 'all'"):
        DriftMonitor(blocks="some")


def test_the_cost_of_drift_control_is_reported_for_the_log():
    root, stack = toy_stack(6, monitor=DriftMonitor(every=1), **FP32)
    stack.segments = [Segment(0, 2), Segment(2, 3, "checkpoint"), Segment(3, 6)]
    step(root, stack)
    pair = 2 * (2 * 5 * 16) * 4  # two fp32 streams of the (2, 5, 16) input
    assert stack.cost() == {"streams": "float32", "anchors": 2, "anchor_bytes": 2 * pair, "recomputed_blocks": 1}
    record = stack.drift_record(stack.monitor.last)
    assert record["drift_every"] == 1 and record["drift_complete"] is False and record["drift_blocks"] == [0, 3, 5]
    assert record["drift_anchor_bytes"] == 2 * pair and record["drift_recomputed_blocks"] == 1
