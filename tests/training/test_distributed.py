"""DDP and FSDP2 (gloo, 2 cpu processes) in every training mode: the same steps as one process on the global batch.

One torchrun job runs every (family, mode, strategy) in turn on the same process group
(`training.distributed_cases`); its final weights and per-step gradient norms are compared
with a single process trained on the whole global batches. The gradient norms catch what
AdamW's scale invariance would hide in the weights (e.g. gradients summed, not averaged).
AdamW runs with eps 1e-6: it divides by the root of the second moment, so a gradient that is
zero up to rounding (the key bias of softmax attention) would otherwise become an update of
the order of the learning rate whose sign depends on the summation order.
A reversible model under DDP finishing its steps means the reducer raised nothing.
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
from training import distributed_cases as cases

from bwsk.errors import BwskError
from bwsk.training.choices import STRATEGIES
from bwsk.training.distributed import DistInfo, gather_per_rank, is_main_process, setup_distributed, wrap_model
from bwsk.training.modes import MODES

TESTS = Path(__file__).resolve().parents[1]
RELATIVE = 1e-5


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Final weights and records of every case from one 2-process torchrun job (`--standalone`: a free port from the OS)."""
    out = tmp_path_factory.mktemp("distributed")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "training.distributed_cases",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return load_file(str(out / "tensors.safetensors")), json.loads((out / "records.json").read_text())


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def saved(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name.removeprefix(prefix + "/"): tensor for name, tensor in tensors.items() if name.startswith(prefix + "/")}


def worst_relative(trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    assert trained.keys() == reference.keys()
    return max(relative(trained[name], reference[name]) for name in reference)


def final_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


@pytest.mark.sweep
@pytest.mark.parametrize("family", cases.FAMILIES)
@pytest.mark.parametrize("mode", MODES)
def test_data_parallel_matches_one_process(distributed_run, family, mode):
    tensors, records = distributed_run
    model, _, reference = cases.train_reference(family, mode)
    weights = final_weights(model)
    initial = {name: p.detach() for name, p in cases.fresh_model(family).named_parameters()}
    assert min(relative(weights[name], initial[name]) for name in initial) > 100 * RELATIVE  # every parameter moved
    for strategy in STRATEGIES:
        case = f"{family}/{mode}/{strategy}"
        worst = worst_relative(saved(tensors, case), weights)
        assert worst < RELATIVE, f"{case}: weights differ by {worst:.2e} (relative)"
        assert records[case]["norms"] == pytest.approx(reference["norms"], rel=RELATIVE), case
        assert records[case]["losses"] == pytest.approx(reference["losses"], rel=RELATIVE), case


@pytest.mark.sweep
@pytest.mark.parametrize("mode", MODES)
def test_fsdp_shards_parameters_and_ddp_replicates_them(distributed_run, mode):
    _, records = distributed_run
    for family in cases.FAMILIES:
        total = sum(p.numel() for p in cases.fresh_model(family).parameters())
        assert records[f"{family}/{mode}/ddp"]["stored_parameters"] == [total, total]
        sharded = records[f"{family}/{mode}/fsdp"]["stored_parameters"]
        assert sum(sharded) == total and max(sharded) < 0.6 * total, (family, mode, sharded)


@pytest.mark.sweep
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_resumed_run_matches_and_its_optimizer_state_is_one_process_layout(distributed_run, strategy):
    tensors, records = distributed_run
    family, mode = cases.RESUMED_FAMILY, cases.RESUMED_MODE
    assert worst_relative(saved(tensors, f"resumed/{strategy}"), saved(tensors, f"{family}/{mode}/{strategy}")) < 1e-6
    _, optimizer, _ = cases.train_reference(family, mode, steps=2)
    reference = optimizer.state_dict()
    assert records[f"moments/{strategy}"] == [group["params"] for group in reference["param_groups"]]
    expected = {f"{index}.{name}": value for index, values in reference["state"].items() for name, value in values.items()}
    moments = saved(tensors, f"moments/{strategy}")
    assert moments.keys() == expected.keys()
    assert max(relative(moments[key], expected[key]) for key in expected if key.endswith("exp_avg")) < RELATIVE


def test_setup_outside_torchrun_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(BwskError, match="torchrun"):
        setup_distributed()


def test_unknown_strategy_is_refused():
    info = DistInfo(rank=0, world_size=1, local_rank=0, backend="gloo", device=torch.device("cpu"))
    with pytest.raises(BwskError, match="unknown distributed strategy"):
        wrap_model(torch.nn.Linear(2, 2), "zero3", info)


def test_helpers_without_a_process_group():
    assert is_main_process()
    assert gather_per_rank(123) == [123]


@pytest.mark.slow
@pytest.mark.interpreter
def test_fsdp_runs_the_fused_norms_as_modules_again(tmp_path):
    """A fused seam would hand the norm's sharded parameters to a kernel: under FSDP2 each half runs its norm module."""
    import torch.distributed as dist
    from training.tiny_models import tiny_model

    from bwsk.training.reversible.convert import make_reversible, reversible_runtime

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = make_reversible(tiny_model("llama"), kernels="triton")
        stack = reversible_runtime(model).stack
        assert all(half.lead is not None for block in stack.blocks for half in (block.f, block.g))
        info = DistInfo(rank=0, world_size=1, local_rank=0, backend="gloo", device=torch.device("cpu"))
        wrap_model(model, "fsdp", info)
        assert all(half.lead is None for block in stack.blocks for half in (block.f, block.g))
        ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(0))
        model(ids, labels=ids).loss.backward()
        norm = model.model.layers[1].post_attention_layernorm.weight
        assert norm.grad is not None and float(norm.grad.full_tensor().abs().sum()) > 0
    finally:
        dist.destroy_process_group()
