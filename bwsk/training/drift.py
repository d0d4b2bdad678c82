"""Drift control: the rebuild error of a reversible stack, measured, and anchors placed from it.

Backward rebuilds each block's inputs from its outputs (x2 = y2 - G(y1),
x1 = y1 - F(x2)); in floating point that is exact only up to rounding, and the
error accumulates from the top of a segment down. A `DriftMonitor` measures it
every `every` steps: the forward keeps the true inputs of the probed blocks,
backward compares them with the rebuilt ones, and the relative error per block
becomes `monitor.last` (a `DriftReport`) for a trainer to log.

With a `tolerance`, each report re-plans the stack: an anchor (a stored stream
pair, i.e. a segment boundary of the autograd Function) is placed wherever the
accumulated error would pass the tolerance, and a block whose own error passes
it alone falls back to recomputation (an ordinary checkpoint of that segment).
Planning assumes errors add along a segment, which over-estimates them when an
anchor shortens a segment (the error of a shorter chain is smaller), so it errs
towards more anchors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Segment:
    """Blocks [start, stop) of a stack, run as one reversible Function ("reversible") or one checkpoint ("checkpoint")."""

    start: int
    stop: int
    mode: str = "reversible"


def segments_from_anchors(blocks: int, anchors: int | Iterable[int] | None) -> list[Segment]:
    """Reversible segments split at `anchors` (block indices whose input pair is stored), or every k blocks for an int k."""
    if anchors is None:
        points: list[int] = []
    elif isinstance(anchors, int):
        if anchors < 1:
            raise ValueError(f"an anchor every k blocks needs k >= 1, not {anchors}")
        points = list(range(anchors, blocks, anchors))
    else:
        points = sorted(set(anchors))
        if any(not 0 < a < blocks for a in points):
            raise ValueError(f"anchors must be block indices in 1..{blocks - 1}, not {points}")
    bounds = [0, *points, blocks]
    return [Segment(a, b) for a, b in zip(bounds, bounds[1:])]


@dataclass(frozen=True)
class DriftReport:
    """Relative rebuild error of each probed block's input pair, measured at training step `step`."""

    step: int
    errors: dict[int, float]

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)


def relative_error(rebuilt: tuple[torch.Tensor, torch.Tensor], true: tuple[torch.Tensor, torch.Tensor]) -> float:
    """|rebuilt - true| / |true| over both streams together (Frobenius norms, fp64 accumulation)."""
    diff = sum(float((r.double() - t.double()).square().sum()) for r, t in zip(rebuilt, true))
    norm = sum(float(t.double().square().sum()) for t in true)
    return (diff / norm) ** 0.5 if norm > 0 else diff**0.5


@dataclass
class DriftProbe:
    """One measurement: the true inputs of probed blocks (kept in forward) and their rebuild errors (filled in backward)."""

    step: int
    blocks: frozenset[int] | None  # None: every block
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    errors: dict[int, float] = field(default_factory=dict)

    def keep(self, block: int, x1: torch.Tensor, x2: torch.Tensor) -> None:
        if self.blocks is None or block in self.blocks:
            self.kept[block] = (x1, x2)

    def compare(self, block: int, x1: torch.Tensor, x2: torch.Tensor) -> None:
        true = self.kept.pop(block, None)
        if true is not None:
            self.errors[block] = relative_error((x1, x2), true)

    @property
    def done(self) -> bool:
        return not self.kept and bool(self.errors)


@dataclass
class DriftMonitor:
    """Measure the rebuild error every `every` training steps (step 0 included) on `blocks` (None: all).

    `step` counts stack calls that build a graph.
    With `tolerance`, the stack re-plans its segments from each report (see `plan_segments`).
    """

    every: int = 100
    blocks: Sequence[int] | None = None
    tolerance: float | None = None
    step: int = 0
    pending: DriftProbe | None = field(default=None, init=False, repr=False)
    _last: DriftReport | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"DriftMonitor(every=...) needs every >= 1, not {self.every}")

    def start_step(self) -> DriftProbe | None:
        """Called once per graph-building stack call: a probe when this step is measured, else None."""
        self.collect()
        step, self.step = self.step, self.step + 1
        if step % self.every:
            return None
        self.pending = DriftProbe(step, None if self.blocks is None else frozenset(self.blocks))
        return self.pending

    @property
    def last(self) -> DriftReport | None:
        """The latest complete report (a probe completes when backward has rebuilt every block it kept)."""
        self.collect()
        return self._last

    def collect(self) -> None:
        probe = self.pending
        if probe is not None and probe.done:
            self.pending = None
            self._last = DriftReport(probe.step, dict(sorted(probe.errors.items())))


def increments(errors: dict[int, float], segments: Sequence[Segment]) -> dict[int, float]:
    """Each block's own share of the measured error: its error minus the error of the block above it in its segment."""
    own = {}
    for segment in segments:
        above = 0.0
        for block in reversed(range(segment.start, segment.stop)):
            if block in errors:
                own[block] = max(errors[block] - above, 0.0)
                above = errors[block]
    return own


def plan_segments(blocks: int, own_errors: dict[int, float], tolerance: float, checkpointed: Iterable[int] = ()) -> list[Segment]:
    """Segments whose accumulated error stays within `tolerance`, walking down from the top.

    A block whose own error exceeds the tolerance (or that is already checkpointed)
    is recomputed instead; adjacent such blocks share one checkpoint segment.
    Unmeasured blocks count as error-free.
    """
    fallback = set(checkpointed) | {b for b, e in own_errors.items() if e > tolerance}
    anchors: set[int] = set()
    accumulated = 0.0
    for block in reversed(range(blocks)):
        if block in fallback:
            accumulated = 0.0
            continue
        error = own_errors.get(block, 0.0)
        if accumulated + error > tolerance:
            anchors.add(block + 1)
            accumulated = 0.0
        accumulated += error
    return _merge(blocks, fallback, anchors)


def _merge(blocks: int, fallback: set[int], anchors: set[int]) -> list[Segment]:
    """Segments from anchor points and fallback blocks; consecutive fallback blocks form one checkpoint segment."""
    segments: list[Segment] = []
    start = 0
    for block in range(1, blocks + 1):
        boundary = block == blocks or block in anchors or ((block in fallback) != ((block - 1) in fallback))
        if boundary:
            segments.append(Segment(start, block, "checkpoint" if start in fallback else "reversible"))
            start = block
    return segments
