"""The command that continues an interrupted run: `bwsk-train --resume DIR`, or under torchrun the same launcher.

torchrun starts every worker as its child (`python -u PROGRAM ARGS...`; `PROGRAM ARGS...` with --no-python;
`python -u -m MODULE ARGS...` with -m), so the launcher's command line ends with the worker's own arguments;
everything before them (launcher, its options, the program) is the prefix a resume reuses, with `--resume DIR`
as the arguments. The launcher's command line is read from /proc; where it cannot be read, or does not end with
this process's arguments (another launcher), the prefix is rebuilt from torchrun's environment variables.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path


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
