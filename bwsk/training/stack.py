"""A stack of coupling blocks: two fp32 streams in, their combination out, in one of three regimes.

- graph-building, `plain=False` (training): each segment runs as one
  `ReversibleFunction` (only its output pair is stored) or, when drift control
  chose recomputation for it, as one non-reentrant checkpoint;
- graph-building, `plain=True`: the same blocks with ordinary autograd, storing
  everything (the reference for gradient tests, see `plain_autograd`);
- no grad (inference, generation): a plain loop, no Function, KV caches kept.

Both streams start as the stack's input h0 in fp32. The output is y1 + y2 - h0:
F's updates accumulate on the first stream, G's on the second, so this is
h0 + sum F + sum G, the analogue of a residual stream, and it equals the
original layer exactly for a single sequential pre-norm layer. It is returned
in h0's dtype.

In graph-building regimes KV caches are dropped from the side inputs (a
rebuild would append to a cache twice) and every half runs under the seeds of
one `StackSeeds` drawn per call, so reversible, plain and checkpointed runs draw
the same dropout masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from bwsk.training.coupling import CouplingBlock, run_blocks
from bwsk.training.drift import DriftMonitor, DriftProbe, increments, plan_segments, segments_from_anchors
from bwsk.training.reversible import AutocastState, ReversibleFunction, SegmentCall, SideInputs
from bwsk.training.rng import StackSeeds


class ReversibleStack:
    """Blocks run as `segments`; `monitor` (optional) measures drift and, with a tolerance, re-plans the segments."""

    def __init__(self, blocks: Sequence[CouplingBlock], *, anchors: int | Sequence[int] | None = None, monitor: DriftMonitor | None = None):
        self.blocks = list(blocks)
        self.segments = segments_from_anchors(len(self.blocks), anchors)
        self.monitor = monitor
        self.plain = False
        self.sharded = False  # set by `bwsk.training.distributed.wrap_model` when FSDP2 shards each half (see `SegmentCall.sharded`)
        self._planned_from: int | None = None  # step of the drift report the segments were last planned from

    def __call__(self, hidden: torch.Tensor, side: Mapping[str, Any]) -> torch.Tensor:
        h0 = hidden.float()
        if not torch.is_grad_enabled():
            y1, y2 = run_blocks(self.blocks, h0, h0, dict(side), hidden.dtype, None)
        else:
            side = without_caches(side)
            seeds = StackSeeds.draw(hidden.device)
            if self.plain:
                y1, y2 = run_blocks(self.blocks, h0, h0, side, hidden.dtype, seeds)
            else:
                y1, y2 = self._segments(h0, side, hidden.dtype, seeds)
        return (y1 + y2 - h0).to(hidden.dtype)

    def _segments(self, h0: torch.Tensor, side: dict[str, Any], dtype: torch.dtype, seeds: StackSeeds):
        probe = self._probe()
        autocast = AutocastState.capture(h0.device.type)
        structure, side_tensors = SideInputs.split(side)
        x1, x2 = h0, h0
        for segment in self.segments:
            blocks = self.blocks[segment.start : segment.stop]
            if segment.mode == "checkpoint":
                x1, x2 = checkpoint(run_blocks, blocks, x1, x2, side, dtype, seeds, use_reentrant=False, preserve_rng_state=False)
                continue
            parameters = list({id(p): p for b in blocks for p in b.parameters() if p.requires_grad}.values())
            call = SegmentCall(blocks, structure, dtype, seeds, autocast, probe, parameters, self.sharded)
            x1, x2 = ReversibleFunction.apply(call, x1, x2, *side_tensors, *parameters)
        return x1, x2

    def _probe(self) -> DriftProbe | None:
        if self.monitor is None:
            return None
        report = self.monitor.last
        if report is not None and self.monitor.tolerance is not None and report.step != self._planned_from:
            self._planned_from = report.step
            checkpointed = [b for s in self.segments if s.mode == "checkpoint" for b in range(s.start, s.stop)]
            own = increments(report.errors, self.segments)
            self.segments = plan_segments(len(self.blocks), own, self.monitor.tolerance, checkpointed)
        return self.monitor.start_step()

    @property
    def anchors(self) -> list[int]:
        """Block indices whose input pair is stored (segment boundaries)."""
        return [s.start for s in self.segments[1:]]


def without_caches(side: Mapping[str, Any]) -> dict[str, Any]:
    """Side inputs for a graph-building run: KV caches removed (None) and `use_cache` off."""
    from transformers.cache_utils import Cache

    cleaned = {name: None if isinstance(value, Cache) else value for name, value in side.items()}
    if "use_cache" in cleaned:
        cleaned["use_cache"] = False
    return cleaned
