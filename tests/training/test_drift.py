"""Drift control: measured rebuild error against an independent rebuild, the schedule, anchor planning and fallback."""

from __future__ import annotations

import pytest
import torch
from training.toy_stack import toy_stack

from bwsk.training.drift import DriftMonitor, Segment, increments, plan_segments, relative_error, segments_from_anchors


def step(root, stack, seed: int = 0) -> dict[str, torch.Tensor]:
    root.zero_grad(set_to_none=True)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(seed))
    stack(x, {}).square().sum().backward()
    return {n: p.grad.clone() for n, p in root.named_parameters()}


def independent_rebuild_errors(stack, x: torch.Tensor) -> dict[int, float]:
    """Run the blocks forward keeping inputs, then invert them with plain torch arithmetic."""
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
    root, stack = toy_stack(6, dropout=0.0, gain=3.0, monitor=DriftMonitor(every=1))
    step(root, stack)
    report = stack.monitor.last
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    expected = independent_rebuild_errors(stack, x)
    assert sorted(report.errors) == list(range(6))
    for block, error in expected.items():
        assert report.errors[block] == pytest.approx(error, rel=1e-6, abs=1e-12)
    assert 0 < report.max_error < 1e-5


def test_drift_is_measured_every_n_steps_on_the_requested_blocks():
    root, stack = toy_stack(4, monitor=DriftMonitor(every=3, blocks=[1, 3]))
    measured = []
    for i in range(5):
        step(root, stack, i)
        measured.append(stack.monitor.last.step)
    assert measured == [0, 0, 0, 3, 3]
    assert sorted(stack.monitor.last.errors) == [1, 3]


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


def test_an_ill_conditioned_stack_is_re_planned_within_tolerance_and_keeps_its_gradients():
    tolerance = 1e-4
    root, stack = toy_stack(8, dropout=0.0, gain=6.0, norm=False, monitor=DriftMonitor(every=1, tolerance=tolerance))
    step(root, stack)
    first = stack.monitor.last
    assert first.max_error > tolerance
    got = step(root, stack)
    assert stack.segments != [Segment(0, 8)]
    assert stack.monitor.last.max_error <= tolerance
    stack.plain = True
    want = step(root, stack)
    for name, w in want.items():
        assert float((got[name] - w).norm() / w.norm()) <= 10 * tolerance, name
