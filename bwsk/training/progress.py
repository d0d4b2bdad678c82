"""A rich progress bar for a training run on stderr (step, loss, tokens/s, memory, ETA); silent when stderr is not a TTY."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:,.0f} MiB"


class TrainingProgress:
    """`with TrainingProgress(total, enabled=...) as bar: bar.update(step, loss=..., tokens_per_s=..., memory=...)`."""

    def __init__(self, total: int, *, start: int = 0, description: str = "training", enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s  peak {task.fields[memory]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            disable=not self.enabled,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total, completed=start, loss="-", speed="-", memory="-")

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, step: int, *, loss: float, tokens_per_s: float, memory: int | None) -> None:
        self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", speed=f"{tokens_per_s:,.0f}", memory=_mib(memory))

    def note(self, text: str) -> None:
        """A line printed above the bar (evaluations, checkpoints)."""
        if self.enabled:
            self._progress.console.print(text, highlight=False)
