"""What fits a memory budget: the longest sequence at batch 1 and the largest batch at seq 2048, from measured peaks.

    fits, steps = fit_model(config, "pythia-410m", budgets=[24 * 2**30], dtype=torch.bfloat16)
    fit = largest_fitting(peak_at, budget, start=2048, unit=128, cap=4096, degree=2, known={})

Every peak is a training step measured under FakeTensorMode (`measure_step`, exact bytes). Per mode and variant
(`VARIANTS`: full loss; chunked loss; chunked loss with AdamW stepped in backward) the search is two-sided: the
peak is a maximum of polynomials in the size, at most quadratic in sequence length and linear in batch, so a
polynomial of that degree through the measured points nearest the budget predicts where the peak reaches it; that
size is measured, and the bracket (largest size measured to fit, smallest measured not to) narrows until it is one
`unit` wide or the answer is the cap. A prediction outside the bracket is replaced by the nearest size inside, and
every fourth measurement of a bracketed search is its midpoint, so a wrong prediction costs steps, never the answer.

Invariants of a `Fit`: `size` was measured and its peak is at most the budget; `size + unit` was measured and its
peak exceeds the budget, or `size` is the cap (`capped`: the answer is "at least size"); `size` is None when even
`unit` exceeds the budget. Measurements are shared between budgets and between the two searches (batch 1 at seq
2048 is a point of both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bwsk.training.modes import MODES
from bwsk.training.modes.fake_step import StepRecord, measure_step
from bwsk.training.trainer.optimizer_in_backward import OptimizerInBackward

VARIANTS = {  # name: (chunked loss, optimizer stepped in backward)
    "full loss": (False, False),
    "chunked loss": (True, False),
    "chunked + opt. in backward": (True, True),
}
SEQ_UNIT = 128  # sequence lengths searched: multiples of it
FIT_SEQ = 2048  # the sequence length of the batch search
GROWTH = 8  # how far beyond the largest fitting size an unbracketed search may look in one step
BISECT_EVERY = 4  # every fourth measurement of a bracketed search is the bracket's midpoint


@dataclass(frozen=True)
class Fit:
    """The largest size whose measured peak fits `budget` (see the module docstring)."""

    model: str
    mode: str
    variant: str
    axis: str  # "seq" (batch 1) or "batch" (seq FIT_SEQ)
    budget: int
    unit: int
    size: int | None
    peak: int | None
    capped: bool
    above_peak: int | None  # the measured peak at size + unit (None when capped)
    measurements: int  # steps this search measured itself (shared ones counted once, by the first search)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def largest_fitting(
    peak_at: Callable[[int], int],
    budget: int,
    *,
    start: int,
    unit: int,
    cap: int | None,
    degree: int,
    known: dict[int, int],
) -> tuple[int | None, bool, int]:
    """(largest multiple of `unit` up to `cap` whose peak fits `budget`, whether it is the cap, steps measured).

    `known` maps sizes to measured peaks: read first, and filled with every size this search measures.
    """
    measured = 0

    def peak(size: int) -> int:
        nonlocal measured
        if size not in known:
            known[size] = peak_at(size)
            measured += 1
        return known[size]

    start = max(unit, (min(start, cap) if cap else start) // unit * unit)
    peak(start)
    while True:
        over = [s for s, p in known.items() if p > budget]
        high = min(over, default=None)
        low = max((s for s, p in known.items() if p <= budget and (high is None or s < high)), default=None)
        if low is not None and (low == cap or high == low + unit):
            return low, low == cap, measured
        if low is None and high == unit:
            return None, False, measured
        if high is not None and measured % BISECT_EVERY == BISECT_EVERY - 1:
            guess = ((low or 0) + high) // 2 // unit * unit
        else:
            guess = _predicted(known, budget, unit, degree, low, high)
        ceiling = high - unit if high is not None else (low or unit) * GROWTH
        if cap:
            ceiling = min(ceiling, cap)
        peak(min(max(guess, (low or 0) + unit), ceiling))


def _predicted(known: dict[int, int], budget: int, unit: int, degree: int, low: int | None, high: int | None) -> int:
    """The largest multiple of `unit` at which a polynomial through the points nearest the budget stays within it."""
    nearest = sorted(known, key=lambda s: abs(known[s] - budget))[: degree + 1]
    if len(nearest) == 1:  # one point: double or halve
        (size,) = nearest
        return size * 2 if known[size] <= budget else size // 2
    xs = np.array(nearest, dtype=float) / unit
    fitted = np.poly1d(np.polyfit(xs, [float(known[s]) for s in nearest], len(nearest) - 1))
    lo = (low or 0) // unit
    hi = high // unit if high is not None else max(lo, max(known) // unit) * GROWTH
    if fitted(hi) <= budget:
        return hi * unit
    while hi - lo > 1:  # the fitted peak is taken as increasing between the bracket's ends
        middle = (lo + hi) // 2
        lo, hi = (middle, hi) if fitted(middle) <= budget else (lo, middle)
    return lo * unit


def fit_model(
    config,
    name: str,
    *,
    budgets: Sequence[int],
    dtype: torch.dtype | None,
    modes: Sequence[str] = MODES,
    variants: Sequence[str] = tuple(VARIANTS),
    cap: int | None = None,
    analyzed_budget: float | None = None,
    seq_unit: int = SEQ_UNIT,
    fit_seq: int = FIT_SEQ,
    on_fit: Callable[[Fit], None] = lambda fit: None,
    on_step: Callable[[StepRecord], None] = lambda step: None,
) -> tuple[list[Fit], list[StepRecord]]:
    """Both searches for every mode, variant and budget of the `config` model (`cap`: the longest sequence searched,
    `seq_unit` its step, `fit_seq` the batch search's sequence length;
    `analyzed_budget`: the analyzed mode's, default `DEFAULT_BUDGET`).

    Returns the fits and every step measured (`on_fit`, `on_step`: called as each is done).
    """
    fits, steps = [], []

    def recorded(step: StepRecord) -> None:
        steps.append(step)
        on_step(step)

    for mode in modes:
        for variant in variants:
            chunked, in_backward = VARIANTS[variant]
            settings = {} if analyzed_budget is None else {"budget": analyzed_budget}
            settings |= dict(dtype=dtype, chunked=chunked, name=name, optimizer_in_backward=OptimizerInBackward if in_backward else None)
            peaks = _Peaks(config, mode, settings, recorded)
            for axis in ("seq", "batch"):
                for limit in sorted(budgets):
                    if axis == "seq":
                        unit, point = seq_unit, (lambda s: (1, s))
                        search = dict(start=fit_seq, unit=seq_unit, cap=cap, degree=2)
                    else:
                        unit, point = 1, (lambda b: (b, fit_seq))
                        search = dict(start=1, unit=1, cap=None, degree=1)
                    known = {size: peaks.known[point(size)] for size in peaks.sizes(axis, fit_seq)}
                    size, capped, count = largest_fitting(
                        lambda n, peaks=peaks, point=point: peaks(*point(n)), limit, known=known, **search
                    )
                    above = None if capped else peaks.known[point((size or 0) + unit)]
                    fit = Fit(
                        name,
                        mode,
                        variant,
                        axis,
                        limit,
                        unit,
                        size,
                        None if size is None else peaks.known[point(size)],
                        capped,
                        above,
                        count,
                    )
                    fits.append(fit)
                    on_fit(fit)
    return fits, steps


class _Peaks:
    """Measured step peaks of one model, mode and variant by (batch, seq): each measured once."""

    def __init__(self, config, mode: str, settings: dict, recorded: Callable[[StepRecord], None]):
        self.config, self.mode, self.settings, self.recorded = config, mode, settings, recorded
        self.known: dict[tuple[int, int], int] = {}

    def __call__(self, batch: int, seq: int) -> int:
        if (batch, seq) not in self.known:
            step = measure_step(self.config, self.mode, batch=batch, seq=seq, **self.settings)
            self.recorded(step)
            self.known[batch, seq] = step.peak_bytes
        return self.known[batch, seq]

    def sizes(self, axis: str, fit_seq: int) -> list[int]:
        """The sizes measured along `axis`: sequence lengths at batch 1, or batches at `fit_seq`."""
        return [seq if axis == "seq" else batch for batch, seq in self.known if (batch == 1 if axis == "seq" else seq == fit_seq)]
