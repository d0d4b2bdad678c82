"""The resume command an interrupted run prints: plain `bwsk-train --resume DIR`, or under torchrun the same launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bwsk.training.trainer import interrupt as launcher
from bwsk.training.trainer.interrupt import launcher_prefix, rebuilt_prefix, resume_command

ARGS = ["pythia-70m", "--data", "d", "--distributed", "fsdp", "--out", "runs/a b"]


@pytest.mark.parametrize(
    "parent,prefix",
    [
        (  # `torchrun` as typed: the kernel records the interpreter of its shebang, which is dropped
            ["/venv/bin/python3", "/venv/bin/torchrun", "--nproc-per-node", "2", "/venv/bin/bwsk-train"],
            ["/venv/bin/torchrun", "--nproc-per-node", "2", "/venv/bin/bwsk-train"],
        ),
        (
            ["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "bwsk.cli.train"],
            ["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "bwsk.cli.train"],
        ),
        (
            ["/venv/bin/python", "/venv/bin/torchrun", "--nnodes", "2", "--no-python", "bwsk-train"],
            ["/venv/bin/torchrun", "--nnodes", "2", "--no-python", "bwsk-train"],
        ),
    ],
)
def test_the_prefix_is_the_launcher_command_line_without_the_worker_arguments(parent, prefix):
    assert launcher_prefix([*parent, *ARGS], ARGS) == prefix


def test_a_command_line_that_does_not_end_with_the_arguments_gives_no_prefix():
    assert launcher_prefix(["srun", "-n", "2", "python", "train.py", "other"], ARGS) is None
    assert launcher_prefix(None, ARGS) is None


def test_the_fallback_is_rebuilt_from_torchrun_variables():
    assert rebuilt_prefix({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}) == "torchrun --nproc-per-node 8 --no-python bwsk-train"
    assert rebuilt_prefix({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}) == "torchrun --nnodes 2 --nproc-per-node 8 --no-python bwsk-train"


def test_resume_commands(monkeypatch):
    assert resume_command(Path("runs/a b"), distributed=False) == "bwsk-train --resume 'runs/a b'"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/bwsk-train", *ARGS])
    monkeypatch.setattr(launcher, "_parent_command_line", lambda: ["/venv/bin/torchrun", "--nproc-per-node", "4", "x", *ARGS])
    assert resume_command(Path("runs/a b"), distributed=True) == "/venv/bin/torchrun --nproc-per-node 4 x --resume 'runs/a b'"
    monkeypatch.setattr(launcher, "_parent_command_line", lambda: None)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resume_command(Path("o"), distributed=True) == "torchrun --nproc-per-node 4 --no-python bwsk-train --resume o"


@pytest.mark.sweep
def test_a_real_torchrun_worker_finds_its_launcher(tmp_path):
    """One torchrun process and one worker; the worker loads the launcher module alone (no torch import: seconds)."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        f"spec = importlib.util.spec_from_file_location('launcher', {launcher.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print('RESUME', module.resume_command(Path('runs/x y'), distributed=True))\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", str(worker), *ARGS]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESUME")]
    head = f"{sys.executable} -m torch.distributed.run --standalone --nproc-per-node 1 {worker}"
    assert line == f"RESUME {head} --resume 'runs/x y'"
