"""Rich progress bars on stderr, silent when stderr is not a TTY: one run's steps, and an experiment's runs.

Both draw on one console, so the bar of the run in progress nests under the bar over the runs
(rich renders nested live displays together); lines printed meanwhile appear above the bars.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bwsk.render.units import human_bytes

STDERR = Console(stderr=True)  # resolves sys.stderr at each write


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
            console=STDERR,
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
        shown = "-" if memory is None else human_bytes(memory)
        self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", speed=f"{tokens_per_s:,.0f}", memory=shown)

    def note(self, text: str) -> None:
        """A line printed above the bar (evaluations, checkpoints)."""
        if self.enabled:
            self._progress.console.print(text, highlight=False)


class RunsProgress:
    """`with RunsProgress(total, enabled=...) as bar: bar.start(name); ...; bar.advance()`: the runs of an experiment."""

    def __init__(self, total: int, *, enabled: bool | None = None):
        self.total, self.done = total, 0
        self._progress = Progress(
            TextColumn("experiment"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("runs  {task.fields[current]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=STDERR,
            disable=not (sys.stderr.isatty() if enabled is None else enabled),
            transient=False,
        )
        self._task = self._progress.add_task("experiment", total=total, current="")

    def __enter__(self) -> RunsProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, name: str) -> None:
        """The run `name` begins."""
        self._progress.update(self._task, current=f"now: {name}")

    def advance(self) -> None:
        """The current run finished."""
        self.done += 1
        self._progress.update(self._task, completed=self.done, current="")
