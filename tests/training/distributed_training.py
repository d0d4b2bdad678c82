"""Several `bwsk-train --distributed` runs in one torchrun job, then one run killed on rank 1: the CLI's own `main` each time.

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m training.distributed_training PLAN.json

PLAN.json: {"root": folder the runs write under, "runs": [argv, ...], "killed": argv, "kill_at": step,
"writes": file}. Every rank records (through an audit hook) each write, rename, creation or removal
of a path under `root` while the runs go, and saves that list to `writes` + ".rankR.json" before
the killed run. In the killed run rank 1 SIGKILLs itself once step `kill_at` is done, as a
crash or the OOM killer would; the job then fails, leaving the run's last checkpoint for `--resume`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from bwsk.cli import train as cli
from bwsk.training.trainer import run as trainer

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGING_EVENTS = ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate")


def record_writes(root: str, found: list[str]) -> None:
    """Append to `found` every path under `root` this process opens for writing or changes."""

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
        elif event in CHANGING_EVENTS:
            path, writing = args[1 if event == "os.rename" else 0], True  # a rename: where it lands
        else:
            return
        if writing and isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(root):
            found.append(f"{event} {os.fspath(path)}")

    sys.addaudithook(hook)


def kill_after(step: int) -> None:
    """Make this process SIGKILL itself once training step `step` (and its checkpoint, if any) is done."""
    after_step = trainer.Run._after_step

    def after_step_then_die(run: trainer.Run) -> str | None:
        stopped = after_step(run)
        if run.state.step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return stopped

    trainer.Run._after_step = after_step_then_die


def main(plan_file: Path) -> None:
    plan = json.loads(plan_file.read_text())
    rank = int(os.environ["RANK"])
    writes: list[str] = []
    record_writes(plan["root"], writes)
    for argv in plan["runs"]:
        code = cli.main(argv)
        if code != 0:
            sys.exit(code)
    Path(f"{plan['writes']}.rank{rank}.json").write_text(json.dumps(writes))
    if rank == 1:
        kill_after(plan["kill_at"])
    sys.exit(cli.main(plan["killed"]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
