"""`bwsk-train --distributed ddp|fsdp` under torchrun (gloo, 2 cpu processes) against one process on the global batch.

Two torchrun jobs in all: the first (`training.distributed_training`) runs the reversible mode under FSDP2 and
the checkpoint mode under DDP through the CLI (each strategy and each mode once: every mode under both strategies,
to the weights, is tests/training/test_distributed.py), then a run that rank 1 kills (SIGKILL) after step 3; the
second is `python -m torch.distributed.run ... -m bwsk.cli.train --resume` on that run.
The references are single-process runs with twice the per-process batch: the same blocks per step
(`BlockSampler` gives rank r every other block of the shuffled order). Dropout is off, fp32.
AdamW's epsilon is 1e-6: the attention key bias has a gradient that is zero up to rounding
(softmax ignores a shift shared by all keys), and with 1e-8 Adam divides that noise by its own
size, an update of the order of the learning rate whose sign depends on the summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training.tiny_models import tiny_model
from training.tiny_text import write_corpus

from bwsk.cli import train as cli
from bwsk.training.choices import STRATEGIES
from bwsk.training.distributed import shutdown_distributed
from bwsk.training.trainer.checkpoint import latest_checkpoint
from bwsk.training.trainer.run_folder import RESULTS_FILE, read_metrics, read_result, without_timing

pytestmark = pytest.mark.sweep  # tens of seconds: `make check` (CI) runs it, `make test` and `make test-fast` leave it out

TESTS = Path(__file__).resolve().parents[1]
MODES = ("reversible", "checkpoint")
RUNS = (("reversible", "fsdp"), ("checkpoint", "ddp"))  # (mode, strategy): the killed run is reversible under fsdp
PER_PROCESS_BATCH = 2
RELATIVE = 1e-5
KILL_AT = 3
COMMON = ["--precision", "fp32", "--device", "cpu", "--seq-len", "16", "--max-steps", "4", "--lr", "3e-3"]
COMMON += ["--eval-every", "2", "--checkpoint-every", "2", "--eval-batch-size", "16"]
COMMON += ["--adam-eps", "1e-6"]  # see below


def torchrun(*arguments: str) -> subprocess.CompletedProcess:
    """A 2-process torchrun job on free ports (`--standalone`), one thread per process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *arguments]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every run's folder under one root: MODE/STRATEGY of `RUNS`, MODE/one-process, killed (after the resume), and the
    jobs' logs."""
    root = tmp_path_factory.mktemp("train-distributed")
    corpus, tokenizer = write_corpus(root, lines=80)
    tiny_model("neox-parallel").save_pretrained(root / "start")
    base = [str(root / "start"), "--data", str(corpus), "--split", "80/10/10", "--tokenizer", str(tokenizer), *COMMON]
    distributed = [
        [*base, "--mode", mode, "--batch-size", str(PER_PROCESS_BATCH), "--distributed", strategy, "--out", str(root / mode / strategy)]
        for mode, strategy in RUNS
    ]
    killed = [*base, "--mode", "reversible", "--batch-size", str(PER_PROCESS_BATCH), "--distributed", "fsdp", "--out", str(root / "killed")]
    plan = {"root": str(root), "runs": distributed, "killed": killed, "kill_at": KILL_AT, "writes": str(root / "writes")}
    (root / "plan.json").write_text(json.dumps(plan))
    first = torchrun("-m", "training.distributed_training", str(root / "plan.json"))
    (root / "first.log").write_text(first.stdout + first.stderr)
    for mode in MODES:
        argv = [*base, "--mode", mode, "--batch-size", str(2 * PER_PROCESS_BATCH), "--out", str(root / mode / "one-process")]
        assert cli.main(argv) == 0
    assert single_process_resume(root / "killed") == 2
    second = torchrun("-m", "bwsk.cli.train", "--resume", str(root / "killed"))
    (root / "second.log").write_text(second.stdout + second.stderr)
    assert second.returncode == 0, second.stderr[-4000:]
    return root


def single_process_resume(folder: Path) -> int:
    """`bwsk-train --resume` of a 2-process run in a 1-process job (a process group of one, in this process): the exit code."""
    variables = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        return cli.main(["--resume", str(folder)])
    finally:
        shutdown_distributed()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worst_relative(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    assert got.keys() == expected.keys()
    return max(float((got[k] - expected[k]).norm() / expected[k].norm().clamp_min(1e-30)) for k in expected)


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights after the last step (the last checkpoint's; the saved model holds the best validation step's)."""
    return load_file(latest_checkpoint(folder / "checkpoints") / "model.safetensors")


def saved_model_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of the model folder a run saved, as `AutoModelForCausalLM` loads it (reversible: the bwsk model type)."""
    from transformers import AutoModelForCausalLM

    import bwsk

    bwsk.register()

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def losses(folder: Path) -> list[float]:
    return [record["loss"] for record in read_metrics(folder / "metrics.jsonl") if "loss" in record]


@pytest.mark.parametrize("mode,strategy", RUNS)
def test_two_processes_train_as_one_process_on_the_global_batch(runs, mode, strategy):
    one, two = runs / mode / "one-process", runs / mode / strategy
    assert (two / RESULTS_FILE).exists(), (runs / "first.log").read_text()[-4000:]
    start = tiny_model("neox-parallel").state_dict()  # the weights saved as the start folder
    reference = final_weights(one)
    assert min(worst_relative({k: reference[k]}, {k: start[k]}) for k in start) > 100 * RELATIVE  # the steps moved every weight
    assert worst_relative(final_weights(two), reference) < RELATIVE
    assert worst_relative(saved_model_weights(two), saved_model_weights(one)) < RELATIVE
    assert losses(two) == pytest.approx(losses(one), rel=RELATIVE) and len(losses(two)) == 4
    result, expected = read_result(two), read_result(one)
    assert result.test["perplexity"] == pytest.approx(expected.test["perplexity"], rel=RELATIVE)
    assert result.world_size == 2 and result.config["distributed"] == strategy and f"{strategy} over gloo" in result.device
    assert len(result.peak_memory_per_rank) == 2 and min(result.peak_memory_per_rank) > 0
    assert result.peak_memory_bytes == max(result.peak_memory_per_rank)
    assert result.tokens_per_s > 0 and read_result(one).world_size == 1


def test_only_rank_0_writes(runs):
    written = json.loads((runs / "writes.rank0.json").read_text())
    assert {s for _, s in RUNS} == set(STRATEGIES) and {m for m, _ in RUNS} == set(MODES)  # each one through the CLI
    for mode, strategy in RUNS:  # the hook sees rank 0 write into every run folder: it would see rank 1 do so
        assert any(f"{runs / mode / strategy}/" in entry for entry in written), (mode, strategy)
    assert json.loads((runs / "writes.rank1.json").read_text()) == []


def test_a_killed_run_resumes_on_as_many_processes_to_the_uninterrupted_weights_and_metrics(runs):
    log = (runs / "first.log").read_text()
    assert "SIGKILL" in log, log[-4000:]
    straight, killed = runs / "reversible" / "fsdp", runs / "killed"
    for name in ("model.safetensors",):
        expected, got = load_file(straight / name), load_file(killed / name)
        assert all(torch.equal(expected[k], got[k]) for k in expected) and expected.keys() == got.keys()
    expected, got = final_weights(straight), final_weights(killed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    metrics = [without_timing(r) for r in read_metrics(killed / "metrics.jsonl")]
    assert metrics == [without_timing(r) for r in read_metrics(straight / "metrics.jsonl")]
    assert read_result(killed).test == read_result(straight).test
