"""What a run reports as it goes, besides its folder: observers of its metrics records (`train(observer=...)`).

`JsonLinesLog`: the records as JSON lines on a stream (stderr by default) for logs read by programs: every
evaluation, and training steps at most one per `every` seconds (the first always). `TensorBoardLog`: the same
records as TensorBoard scalars (the optional `tensorboard` package). `observing(...)` combines several.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from bwsk.errors import BwskError

Observer = Callable[[dict[str, Any]], None]
STEP_SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s", "peak_memory_bytes")


class JsonLinesLog:
    """Metrics records as JSON lines: each evaluation, and a training step when `every` seconds have passed since the last."""

    def __init__(self, stream: TextIO | None = None, *, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.stream, self.every, self.clock, self.last = stream, every, clock, None

    def __call__(self, record: dict[str, Any]) -> None:
        now = self.clock()
        is_step = "split" not in record
        if is_step and self.last is not None and now - self.last < self.every:
            return
        if is_step:
            self.last = now
        print(json.dumps(record, allow_nan=False), file=self.stream or sys.stderr, flush=True)


class TensorBoardLog:
    """Metrics records as TensorBoard scalars in `folder`: train/* per step, valid/* and test/* per evaluation."""

    def __init__(self, folder: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            raise BwskError("--tensorboard needs the tensorboard package: pip install 'bwsk[tensorboard]'") from None
        self.writer = SummaryWriter(str(folder))

    def __call__(self, record: dict[str, Any]) -> None:
        split, step = record.get("split"), record["step"]
        if split is None:
            for name in STEP_SCALARS:
                if record.get(name) is not None:
                    self.writer.add_scalar(f"train/{name}", record[name], step)
        else:
            for name in ("nll", "perplexity"):
                self.writer.add_scalar(f"{split}/{name}", record[name], step)
        self.writer.flush()


def observing(observers: Iterable[Observer | None]) -> Observer | None:
    """One observer calling each given one in order (None when none is given)."""
    chosen = [observer for observer in observers if observer is not None]
    if not chosen:
        return None

    def observe(record: dict[str, Any]) -> None:
        for observer in chosen:
            observer(record)

    return observe
