"""Drift control: the rebuild error of a reversible stack, measured, and anchors placed from it.

Backward rebuilds each block's inputs from its outputs (x2 = y2 - G(y1),
x1 = y1 - F(x2)). With float64 streams (the default, `bwsk.training.reversible.stack`) the
update y = x + f adds a half's fp32 or bf16 output into a 53-bit significand,
which is exact whenever the stream's magnitudes span less than 2^29 of the
output's ulp, so the subtraction gives x back bit for bit and F recomputes on the
very input it saw in forward. With fp32 streams (or a non-deterministic kernel)
the rebuild is exact only up to rounding, and the error grows from the top of a
segment down, exponentially toward the input; under bf16 autocast a 1e-7 change
of F's input flips bf16 roundings that a random-init network amplifies.

A `DriftMonitor` measures it every `every` steps at low cost: the forward keeps a
few rows (`rows`) of the input pairs of a few blocks (`blocks="sampled"`: the
first block of each segment, where its error is largest, and blocks spread over
the stack), backward compares them with the rebuilt ones, and the relative error
per block becomes `monitor.last` (a `DriftReport`) for a trainer to log. When a
sampled report exceeds the `tolerance`, the next step measures every block, and
the stack re-plans from that complete report: an anchor (a stored stream pair, a
segment boundary of the autograd Function) wherever the accumulated error would
pass the tolerance, recomputation (an ordinary checkpoint) for a block whose own
error passes it alone. The plan stores at most `max_segments` pairs (the memory
cap); when the tolerance cannot be met within it, the tolerance is relaxed until
the plan fits and the plan says so. Planning assumes errors add along a segment,
which over-estimates them when an anchor shortens a segment, so it errs towards
more anchors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import is_fake

from bwsk.training.choices import DEFAULT_DRIFT_TOLERANCE

SAMPLED_BLOCKS = 4  # blocks a sampled probe measures (besides every segment's first)
SAMPLED_ROWS = 64  # rows (tokens) of each probed pair kept and compared, at most 1/16 of them; None keeps them all
ROW_SHARE = 16
STACK_MEMORY_CAP = 3 * 2 * 2 * 4  # bytes per hidden element the stored pairs may take: 3x two fp32 stream pairs


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


def max_segments(stream_dtype: torch.dtype) -> int:
    """Segments (stored stream pairs) within the memory cap: 3 for float64 streams, 6 for fp32."""
    return max(1, STACK_MEMORY_CAP // (2 * torch.finfo(stream_dtype).bits // 8))


@dataclass(frozen=True)
class DriftReport:
    """Relative rebuild error of each probed block's input pair, measured at training step `step`.

    `complete`: every block was measured (a sampled report covers a few).
    """

    step: int
    errors: dict[int, float]
    complete: bool = True

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)


def relative_error(rebuilt: tuple[torch.Tensor, torch.Tensor], true: tuple[torch.Tensor, torch.Tensor]) -> float:
    """|rebuilt - true| / |true| over both streams together (Frobenius norms, fp64 accumulation); NaN for fake tensors
    (a FakeTensorMode measuring memory: no values to compare)."""
    if any(is_fake(t) for t in (*rebuilt, *true)):
        return math.nan
    diff = sum(float((r.double() - t.double()).square().sum()) for r, t in zip(rebuilt, true))
    norm = sum(float(t.double().square().sum()) for t in true)
    return (diff / norm) ** 0.5 if norm > 0 else diff**0.5


def sampled_blocks(blocks: int, segments: Sequence[Segment], count: int = SAMPLED_BLOCKS) -> frozenset[int]:
    """Every segment's first block (its largest error) and `count` blocks spread evenly from the input to the top."""
    spread = {round(i * (blocks - 1) / (count - 1)) for i in range(count)} if count > 1 and blocks > 1 else {0}
    return frozenset(spread | {s.start for s in segments}) & frozenset(range(blocks))


@dataclass
class DriftProbe:
    """One measurement: rows of the true inputs of probed blocks (kept in forward) and their rebuild errors (filled in backward)."""

    step: int
    blocks: frozenset[int]
    complete: bool
    rows: int | None = SAMPLED_ROWS
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    errors: dict[int, float] = field(default_factory=dict)

    def keep(self, block: int, x1: torch.Tensor, x2: torch.Tensor) -> None:
        if block in self.blocks:
            self.kept[block] = (self._sample(x1).clone(), self._sample(x2).clone())

    def compare(self, block: int, x1: torch.Tensor, x2: torch.Tensor) -> None:
        true = self.kept.pop(block, None)
        if true is not None:
            self.errors[block] = relative_error((self._sample(x1), self._sample(x2)), true)

    def _sample(self, stream: torch.Tensor) -> torch.Tensor:
        """`rows` rows (at most 1/16 of them, at least one) of the stream, spread evenly over its batch and positions."""
        flat = stream.detach().reshape(-1, stream.shape[-1])
        if self.rows is None:
            return flat
        count = max(1, min(self.rows, flat.shape[0] // ROW_SHARE))
        return flat[torch.linspace(0, flat.shape[0] - 1, count, device=flat.device).round().long()]

    @property
    def done(self) -> bool:
        return not self.kept and bool(self.errors)


@dataclass
class DriftMonitor:
    """Measure the rebuild error every `every` training steps (step 0 included).

    `blocks`: "sampled" (see `sampled_blocks`), "all", or block indices; `rows`: rows of each pair compared
    (None: all). `step` counts stack calls that build a graph. With a `tolerance`, a sampled report above it
    makes the next step measure every block, and the stack re-plans its segments from complete reports above it.
    """

    every: int = 100
    blocks: Sequence[int] | str = "sampled"
    tolerance: float | None = DEFAULT_DRIFT_TOLERANCE
    rows: int | None = SAMPLED_ROWS
    step: int = 0
    pending: DriftProbe | None = field(default=None, init=False, repr=False)
    _last: DriftReport | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"DriftMonitor(every=...) needs every >= 1, not {self.every}")
        if isinstance(self.blocks, str) and self.blocks not in ("sampled", "all"):
            raise ValueError(f"DriftMonitor(blocks=...) takes 'sampled', 'all' or block indices, not {self.blocks!r}")
        if self.tolerance is not None and not self.tolerance > 0:
            raise ValueError(f"DriftMonitor(tolerance=...) needs a tolerance > 0, not {self.tolerance}")

    def start_step(self, blocks: int, segments: Sequence[Segment]) -> DriftProbe | None:
        """Called once per graph-building stack call of `blocks` blocks: a probe when this step is measured, else None."""
        last = self.last
        step, self.step = self.step, self.step + 1
        escalate = last is not None and not last.complete and self.exceeded(last) and self.pending is None
        if step % self.every and not escalate:
            return None
        if escalate or self.blocks == "all":
            chosen = frozenset(range(blocks))
        elif self.blocks == "sampled":
            chosen = sampled_blocks(blocks, segments)
        else:
            chosen = frozenset(b for b in self.blocks if 0 <= b < blocks)
        self.pending = DriftProbe(step, chosen, len(chosen) == blocks, self.rows)
        return self.pending

    def exceeded(self, report: DriftReport) -> bool:
        return self.tolerance is not None and report.max_error > self.tolerance

    @property
    def last(self) -> DriftReport | None:
        """The latest complete report (a probe completes when backward has rebuilt every block it kept)."""
        self.collect()
        return self._last

    def collect(self) -> None:
        probe = self.pending
        if probe is not None and probe.done:
            self.pending = None
            self._last = DriftReport(probe.step, dict(sorted(probe.errors.items())), probe.complete)


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


@dataclass(frozen=True)
class Plan:
    """Segments planned from measured errors, and the tolerance they keep (above the one asked when the cap bound)."""

    segments: list[Segment]
    tolerance: float

    def within(self, tolerance: float) -> bool:
        return self.tolerance <= tolerance


def plan_within(blocks: int, own_errors: dict[int, float], tolerance: float, limit: int, checkpointed: Iterable[int] = ()) -> Plan:
    """`plan_segments` with at most `limit` segments: the tolerance doubles until the plan fits (recorded in the plan).

    Blocks already checkpointed stay so (they are not rebuilt, hence not measured).
    """
    checkpointed = list(checkpointed)
    kept = tolerance
    while True:
        segments = plan_segments(blocks, own_errors, kept, checkpointed)
        if len(segments) <= limit or not math.isfinite(kept):
            return Plan(segments, kept)
        kept *= 2


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
