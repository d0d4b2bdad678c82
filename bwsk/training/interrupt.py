"""Ctrl-C during training: `SigintFlag` turns SIGINT into a flag the loop checks after each step; `TrainingInterrupted`
is how the run then stops, once its checkpoint is written.

Invariants: the handler is installed only while the flag is entered, and only on the main thread (elsewhere
SIGINT keeps its handler). In one process the first SIGINT sets `raised` and gives SIGINT back to the previous
handler, so a second one interrupts at once; within `at_once()` the first raises KeyboardInterrupt as well.
Distributed, every SIGINT only sets the flag: Ctrl-C reaches each worker twice (from the terminal and forwarded
by torchrun), and a rank leaving alone would strand the others.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from bwsk.errors import BwskError


class TrainingInterrupted(BwskError):
    """SIGINT: the run saved a checkpoint at `step` and stopped; `--resume` continues it."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class SigintFlag:
    """`with flag:` SIGINT sets `flag.raised` (see the module docstring); `distributed`: this process is one rank of several."""

    def __init__(self, *, distributed: bool):
        self.distributed = distributed
        self.raised = False
        self.urgent = False
        self.previous = None

    def __enter__(self) -> SigintFlag:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    @contextlib.contextmanager
    def at_once(self) -> Iterator[None]:
        """Within: a SIGINT (of one process) raises KeyboardInterrupt at once (a long evaluation is not waited for)."""
        self.urgent = True
        try:
            yield
        finally:
            self.urgent = False

    def _handle(self, signum, frame) -> None:
        self.raised = True
        if self.distributed:
            return
        signal.signal(signal.SIGINT, self.previous)
        if self.urgent:
            raise KeyboardInterrupt
