"""Progress on stderr: one run's steps, and an experiment's runs.

On a terminal, rich progress bars; both draw on one console, so the bar of the run in progress nests under
the bar over the runs (rich renders nested live displays together), and lines printed meanwhile appear above
them. Without a terminal (CI logs, nohup, SLURM), a run prints plain lines instead: after its first step, then
at most every `LINE_SECONDS` and after its last step (step, loss, tokens/s, peak memory, elapsed, ETA).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bwsk.render.units import human_bytes

STDERR = Console(stderr=True)  # resolves sys.stderr at each write
LINE_SECONDS = 10.0  # without a terminal: the longest gap between two progress lines


class TrainingProgress:
    """`with TrainingProgress(total, enabled=...) as bar: bar.update(step, loss=..., tokens_per_s=..., memory=...)`.

    `enabled` None: a bar on a terminal, lines elsewhere; True: a bar; False: nothing."""

    def __init__(self, total: int, *, start: int = 0, description: str = "training", enabled: bool | None = None):
        self.lines = enabled is None and not sys.stderr.isatty()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total, self.start, self.description = total, start, description
        self.started = self.last_line = time.monotonic()
        self.lines_printed = 0
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
        now = time.monotonic()
        if self.lines and (self.lines_printed == 0 or step >= self.total or now - self.last_line >= LINE_SECONDS):
            elapsed, done = now - self.started, step - self.start
            eta = "-" if done <= 0 else str(timedelta(seconds=round(elapsed / done * (self.total - step))))
            print(
                f"{self.description} step {step}/{self.total}  loss {loss:.4f}  {tokens_per_s:,.0f} tok/s  peak {shown}  "
                f"elapsed {timedelta(seconds=round(elapsed))}  ETA {eta}",
                file=sys.stderr,
                flush=True,
            )
            self.last_line, self.lines_printed = now, self.lines_printed + 1

    def note(self, text: str) -> None:
        """A line printed above the bar (evaluations, checkpoints), or among the progress lines."""
        if self.enabled:
            self._progress.console.print(text, highlight=False)
        elif self.lines:
            print(text, file=sys.stderr, flush=True)


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
