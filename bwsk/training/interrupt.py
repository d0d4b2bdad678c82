"""Ctrl-C (SIGINT) or SIGTERM during training: `InterruptFlag` turns either into a flag the loop checks after each step;
`TrainingInterrupted` is how the run then stops, once its checkpoint is written; its exit code is 128 + the signal.

Invariants: handlers are installed only while the flag is entered, and only on the main thread (elsewhere
the signals keep their handlers). In one process the first signal sets `raised` (and `signum`) and gives that
signal back to its previous handler, so a second one acts at once; within `at_once()` the first raises
`Interrupted` (a KeyboardInterrupt) as well. Distributed, every signal only sets the flag: Ctrl-C reaches each
worker twice (from the terminal and forwarded by torchrun), and a rank leaving alone would strand the others.
`signals_interrupt()` makes SIGTERM outside the loop (loading, evaluating) what SIGINT is: an `Interrupted`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from bwsk.errors import BwskError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (`signum`) stopped the work at once."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TrainingInterrupted(BwskError):
    """SIGINT or SIGTERM (`signum`): the run saved a checkpoint at `step` and stopped; `--resume` continues it."""

    def __init__(self, message: str, step: int, signum: int = signal.SIGINT):
        super().__init__(message)
        self.step, self.signum = step, signum

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports a process the signal ended (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signum


def stopped_by(signum: int) -> str:
    """How a signal stopped the work, in words: "interrupted" (Ctrl-C) or "terminated (SIGTERM)"."""
    return "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"


class InterruptFlag:
    """`with flag:` SIGINT or SIGTERM sets `flag.raised` (see the module docstring); `distributed`: one rank of several."""

    def __init__(self, *, distributed: bool):
        self.distributed = distributed
        self.raised = False
        self.signum = signal.SIGINT
        self.urgent = False
        self.previous: dict[int, object] = {}

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    @contextlib.contextmanager
    def at_once(self) -> Iterator[None]:
        """Within: a signal (of one process) raises `Interrupted` at once (a long evaluation is not waited for)."""
        self.urgent = True
        try:
            yield
        finally:
            self.urgent = False

    def _handle(self, signum, frame) -> None:
        if not self.raised:
            self.raised, self.signum = True, signum
        if self.distributed:
            return
        signal.signal(signum, self.previous[signum])
        if self.urgent:
            raise Interrupted(signum)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within (on the main thread): SIGTERM raises `Interrupted(SIGTERM)`, as SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
