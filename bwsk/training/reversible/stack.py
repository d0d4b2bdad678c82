"""A stack of coupling blocks: two float64 streams in, their combination out, in one of three regimes.

- graph-building, `plain=False` (training): each segment runs as one
  `ReversibleFunction` (only its output pair is stored) or, when drift control
  chose recomputation for it, as one non-reentrant checkpoint;
- graph-building, `plain=True`: the same blocks with ordinary autograd, storing
  everything (the reference for gradient tests, see `plain_autograd`);
- no grad (inference, generation): a plain loop, no Function, KV caches kept.

Both streams start as the stack's input h0 in the stream dtype (`streams`: float64
by default, fp32 on a device without float64). Float64 streams make the rebuild
exact: a half runs in the model's dtype, and adding its fp32 or bf16 output to a
53-bit stream loses nothing, so subtracting it gives the input back bit for bit
(see `bwsk.training.reversible.drift`), at twice an fp32 pair's memory per stored pair.
Drift control (`monitor`, `calibrate`) is the safety net for what can still break
the inversion: fp32 streams, or kernels that do not repeat their results.
The output is y1 + y2 - h0:
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

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from bwsk.training.choices import DEFAULT_DRIFT_TOLERANCE
from bwsk.training.reversible.coupling import CouplingBlock, StackSeeds, run_blocks
from bwsk.training.reversible.drift import (
    DriftMonitor,
    DriftProbe,
    DriftReport,
    Plan,
    increments,
    max_segments,
    plan_within,
    segments_from_anchors,
)
from bwsk.training.reversible.function import AutocastState, ReversibleFunction, SegmentCall, SideInputs

STREAMS = torch.float64
CALIBRATION_PRECISIONS = (None, torch.bfloat16)  # autocast dtypes `calibrate` measures under (None: the model's own)


class StreamSum(torch.autograd.Function):
    """(y1, y2, hidden) -> (y1 + y2 - h0) in hidden's dtype, h0 being hidden in the streams' dtype (as the stack made it).

    The same value as autograd's `(y1 + y2 - h0).to(hidden.dtype)`; its backward hands the stack input its share, -grad,
    in hidden's dtype, where autograd's would hold it in the streams' dtype (float64: twice the bytes of an fp32
    tensor of the stream's shape) for the whole reversible backward, until the streams' gradients reach h0.
    """

    @staticmethod
    def forward(ctx, y1: torch.Tensor, y2: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        ctx.stream_dtype = y1.dtype
        return (y1 + y2 - hidden.to(y1.dtype)).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        stream_grad = grad.to(ctx.stream_dtype)
        return stream_grad, stream_grad, -grad


class ReversibleStack:
    """Blocks run as `segments`; `monitor` (optional) measures drift and, with a tolerance, re-plans the segments."""

    def __init__(
        self,
        blocks: Sequence[CouplingBlock],
        *,
        anchors: int | Sequence[int] | None = None,
        monitor: DriftMonitor | None = None,
        streams: torch.dtype = STREAMS,
    ):
        self.blocks = list(blocks)
        self.segments = segments_from_anchors(len(self.blocks), anchors)
        self.monitor = monitor
        self.streams = streams
        self.plan: Plan | None = None  # the latest plan drift control made from a measurement (None: the segments as given)
        self.calibration: dict[int, float] | None = None  # rebuild error per block measured by `calibrate`
        self.pair_bytes = 0  # bytes of one stream pair at the latest graph-building call
        self.plain = False
        self.sharded = False  # set by `bwsk.training.distributed.wrap_model` when FSDP2 shards each half (see `SegmentCall.sharded`)
        self.grads_into_leaves = False  # set during an optimizer-in-backward step: gradients go to `.grad` half by half, as under FSDP2
        self._planned_from: int | None = None  # step of the drift report the segments were last planned from

    def __call__(self, hidden: torch.Tensor, side: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """`side`: each block's side inputs in block order, or one mapping every block shares."""
        h0 = hidden.to(self.stream_dtype(hidden.device))
        sides = [side] * len(self.blocks) if isinstance(side, Mapping) else list(side)
        if not torch.is_grad_enabled():
            y1, y2 = run_blocks(self.blocks, h0, h0, [dict(s) for s in sides], hidden.dtype, None)
        else:
            side = [without_caches(s) for s in sides]
            seeds = StackSeeds.draw(hidden.device)
            if self.plain:
                y1, y2 = run_blocks(self.blocks, h0, h0, side, hidden.dtype, seeds)
            else:
                y1, y2 = self._segments(h0, side, hidden.dtype, seeds)
        return StreamSum.apply(y1, y2, hidden)

    def _segments(self, h0: torch.Tensor, side: list[dict[str, Any]], dtype: torch.dtype, seeds: StackSeeds):
        self.pair_bytes = 2 * h0.numel() * h0.element_size()
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
            call = SegmentCall(blocks, structure, dtype, seeds, autocast, probe, parameters, self.sharded or self.grads_into_leaves)
            x1, x2 = ReversibleFunction.apply(call, x1, x2, *side_tensors, *parameters)
        return x1, x2

    def _probe(self) -> DriftProbe | None:
        """This step's probe; first, re-plan from a new complete report above the tolerance."""
        if self.monitor is None:
            return None
        report = self.monitor.last
        if report is not None and report.complete and self.monitor.exceeded(report) and report.step != self._planned_from:
            self._planned_from = report.step
            self.replan(report.errors)
        return self.monitor.start_step(len(self.blocks), self.segments)

    def replan(self, errors: dict[int, float]) -> None:
        """Segments from measured rebuild errors (every block's) within the monitor's tolerance and the memory cap."""
        tolerance = self.monitor.tolerance if self.monitor is not None and self.monitor.tolerance is not None else DEFAULT_DRIFT_TOLERANCE
        checkpointed = [b for s in self.segments if s.mode == "checkpoint" for b in range(s.start, s.stop)]
        own = increments(errors, self.segments)
        limit = max_segments(self.streams)
        self.plan = plan_within(len(self.blocks), own, tolerance, limit, checkpointed)
        self.segments = self.plan.segments
        if not self.plan.within(tolerance):
            warnings.warn(
                f"reversible stack: rebuild error {max(errors.values()):.2g} needs more than {limit} stored stream pairs "
                f"(the memory cap) to stay within {tolerance:g}; kept within {self.plan.tolerance:.2g}",
                stacklevel=2,
            )

    def calibrate(self, loss: Callable[[], torch.Tensor], precisions: Sequence[torch.dtype | None] = CALIBRATION_PRECISIONS) -> None:
        """Anchors placed by measurement: every block's rebuild error through `loss()` (any output of a forward through
        the stack, e.g. a model's logits on a fixed tiny input), under each autocast dtype in `precisions`; the segments
        are re-planned from the larger error per block when it passes the monitor's tolerance.

        Parameters' `.grad`, the RNG streams and the monitor's schedule are left as they were; no-op without a monitor
        with a tolerance, or without a trainable parameter in the blocks.
        """
        monitor = self.monitor
        parameters = [p for block in self.blocks for p in block.parameters() if p.requires_grad]
        if monitor is None or monitor.tolerance is None or not parameters:
            return
        device = parameters[0].device
        errors: dict[int, float] = {}
        try:
            for dtype in precisions:
                if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                    continue  # a GPU without bf16 trains without it
                self.monitor = DriftMonitor(every=1, blocks="all", tolerance=None, rows=monitor.rows)
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        out = loss()
                    torch.autograd.grad(out.float().sum(), parameters[:1], allow_unused=True)
                report = self.monitor.last
                for block, error in (report.errors if report is not None else {}).items():
                    errors[block] = max(error, errors.get(block, 0.0))
        finally:
            self.monitor = monitor
        self.calibration = dict(sorted(errors.items()))
        if max(errors.values(), default=0.0) > monitor.tolerance:
            self.replan(errors)

    def stream_dtype(self, device: torch.device) -> torch.dtype:
        """`streams`, or fp32 on a device without float64 (MPS)."""
        return torch.float32 if device.type == "mps" else self.streams

    def drift_record(self, report: DriftReport) -> dict[str, Any]:
        """Training-log fields of a drift report: the schedule (every N steps), what was measured, and the cost now."""
        every = self.monitor.every if self.monitor is not None else None
        measured = {"drift_every": every, "drift_blocks": list(report.errors), "drift_complete": report.complete}
        return measured | {f"drift_{name}": value for name, value in self.cost().items()}

    def cost(self) -> dict[str, Any]:
        """What drift control costs now: stored pairs beyond the output's (anchors and recompute inputs) and their bytes at
        the latest call, and the blocks recomputed by checkpoint (their activations live during their backward)."""
        recomputed = sum(s.stop - s.start for s in self.segments if s.mode == "checkpoint")
        return {
            "streams": str(self.streams).removeprefix("torch."),
            "anchors": len(self.segments) - 1,
            "anchor_bytes": (len(self.segments) - 1) * self.pair_bytes,
            "recomputed_blocks": recomputed,
        }

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
