"""Ctrl-C (SIGINT) or SIGTERM during training: `InterruptFlag` turns either into a flag the loop checks after each step;
`TrainingInterrupted` is how the run then stops, once its checkpoint is written; its exit code is 128 + the signal.

Invariants: handlers are installed only while the flag is entered, and only on the main thread (elsewhere
the signals keep their handlers). In one process the first signal sets `raised` (and `signum`) and gives that
signal back to its previous handler, so a second one acts at once; within `at_once()` the first raises
`Interrupted` (a KeyboardInterrupt) as well. Distributed, every signal only sets the flag: Ctrl-C reaches each
worker twice (from the terminal and forwarded by torchrun), and a rank leaving alone would strand the others.
`signals_interrupt()` makes SIGTERM outside the loop (loading, evaluating) what SIGINT is: an `Interrupted`.

The command that continues an interrupted run: `bwsk-train --resume DIR`, or under torchrun the same launcher.

torchrun starts every worker as its child (`python -u PROGRAM ARGS...`; `PROGRAM ARGS...` with --no-python;
`python -u -m MODULE ARGS...` with -m), so the launcher's command line ends with the worker's own arguments;
everything before them (launcher, its options, the program) is the prefix a resume reuses, with `--resume DIR`
as the arguments. The launcher's command line is read from /proc; where it cannot be read, or does not end with
this process's arguments (another launcher), the prefix is rebuilt from torchrun's environment variables.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

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


def resume_command(out: Path, *, distributed: bool) -> str:
    """The shell command that resumes the run in `out`; `distributed`: this process is a worker of a torchrun job."""
    if not distributed:
        return shlex.join(["bwsk-train", "--resume", str(out)])
    prefix = launcher_prefix(_parent_command_line(), sys.argv[1:])
    if prefix is None:
        return f"{rebuilt_prefix(os.environ)} --resume {shlex.quote(str(out))}"
    return shlex.join([*prefix, "--resume", str(out)])


def launcher_prefix(launcher: list[str] | None, arguments: list[str]) -> list[str] | None:
    """The `launcher` command line without its trailing `arguments`; None unless it ends with them.

    A Python interpreter in front of a `torchrun` script (how the kernel records a script run
    by its shebang) is dropped: `torchrun ...` is what was typed, and what runs again.
    """
    if not launcher or len(launcher) <= len(arguments) or launcher[len(launcher) - len(arguments) :] != arguments:
        return None
    prefix = launcher[: len(launcher) - len(arguments)]
    if len(prefix) > 1 and Path(prefix[1]).name == "torchrun" and Path(prefix[0]).name.startswith("python"):
        prefix = prefix[1:]
    return prefix


def rebuilt_prefix(environment: Mapping[str, str]) -> str:
    """`torchrun [--nnodes N] --nproc-per-node M --no-python bwsk-train`, from the variables torchrun gives its workers."""
    world = int(environment.get("WORLD_SIZE", "1"))
    per_node = int(environment.get("LOCAL_WORLD_SIZE", str(world)))
    nodes = world // max(per_node, 1)
    return f"torchrun{f' --nnodes {nodes}' if nodes > 1 else ''} --nproc-per-node {per_node} --no-python bwsk-train"


def _parent_command_line() -> list[str] | None:
    """The parent process's command line (Linux /proc), None where it cannot be read."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]] or None
