"""Data-parallel training under `torchrun`: process group, DDP or FSDP2 wrapping of a model in any mode, rank helpers.

    info = setup_distributed()                        # reads RANK, WORLD_SIZE, LOCAL_RANK; gloo on the cpu, nccl on CUDA
    model = apply_mode(model.to(info.device), mode, ...)
    model = wrap_model(model, "fsdp", info)           # or "ddp"; then build the optimizer from model.parameters()
    ...
    weights, moments = full_model_state(model), full_optimizer_state(model, optimizer)  # collectives
    if info.is_main: save(weights, moments)          # whole on rank 0, {} elsewhere; resume: load_full_*_state
    shutdown_distributed()

Each rank trains on its own batch (`BlockSampler(rank=..., world_size=...)`); both wrappers
average gradients over ranks, so a step equals one process's step on the union of the
ranks' batches (the global batch).

Strategies, applied after `apply_mode` (wrapping first would hide the blocks from it):
  ddp:  `DistributedDataParallel` over the whole model. Every mode's gradients reach each
        parameter exactly once per backward (checkpointing is non-reentrant; the reversible
        Function returns all its parameters' gradients at once, in reverse block order),
        so no unused-parameter search is needed.
  fsdp: FSDP2 `fully_shard` on every block, then on the root. In the reversible mode the
        layers' forwards no longer run their own sub-modules (the stack calls F and G
        directly, forward and rebuild alike), so the units are the halves instead: the
        sub-modules of each F and each G are sharded as one group, gathered when the half
        runs (in forward and again in the rebuild in backward), and their gradients are
        accumulated in the rebuild and reduce-scattered half by half (`SegmentCall.sharded`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from bwsk.errors import BwskError
from bwsk.training.layers import block_list

STRATEGIES = ("ddp", "fsdp")
T = TypeVar("T")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: global rank, world size, rank on its node, backend and device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics and the model card."""
        return self.rank == 0


def setup_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group `torchrun` describes (its environment variables); backend None: nccl on CUDA, else gloo.

    On CUDA each process uses the GPU of its local rank. Raises `BwskError` (one line) outside torchrun.
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise BwskError(
            f"distributed training runs under torchrun (missing {', '.join(missing)}): torchrun --nproc-per-node N bwsk-train ..."
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available() and backend != "gloo"
    backend = backend or ("nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if cuda else None)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def shutdown_distributed() -> None:
    """Leave the process group (no-op when none is initialised)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True on rank 0 (by torchrun's RANK before the process group is joined), and in a process outside any job."""
    return dist.get_rank() == 0 if dist.is_initialized() else os.environ.get("RANK", "0") == "0"


def wrap_model(model: nn.Module, strategy: str, info: DistInfo) -> nn.Module:
    """`model` (already in its training mode, on `info.device`) under DDP or FSDP2; build the optimizer afterwards.

    FSDP2 replaces the parameters by sharded DTensors, so an optimizer made before wrapping would
    update tensors that are no longer the model's.
    """
    if strategy not in STRATEGIES:
        raise BwskError(f"unknown distributed strategy {strategy!r} (expected one of {', '.join(STRATEGIES)})")
    if strategy == "ddp":
        return DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    from bwsk.training.convert import RUNTIME_ATTRIBUTE

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    if hasattr(model, RUNTIME_ATTRIBUTE):
        _shard_halves(model, mesh)
    else:
        for block in block_list(model)[1]:
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _shard_halves(model: nn.Module, mesh: DeviceMesh) -> None:
    """FSDP2 units for a reversible model: each half's sub-modules with parameters, as one group; the stack is told.

    Halves run their leading norm as a module again (a fused seam would read the norm's sharded parameters).
    """
    from bwsk.training.convert import reversible_runtime

    stack = reversible_runtime(model).stack
    sharded: set[int] = set()
    for block in stack.blocks:
        for half in (block.f, block.g):
            half.fuse(False)
            modules = [module for module in half.modules if next(module.parameters(), None) is not None]
            if any(id(module) in sharded for module in modules):
                raise BwskError(f"block {block.index}: a sub-module is shared between halves; FSDP2 cannot shard it per half")
            sharded.update(id(module) for module in modules)
            if modules:
                fully_shard(modules, mesh=mesh)
    stack.sharded = True


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 wraps in place: the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
FROM_RANK0 = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict (the unwrapped model's names) on the cpu of rank 0; {} on other ranks. A collective.

    Tensors already whole and on the cpu (DDP on the cpu) are the live ones, not copies: write them before the next step.
    """
    return get_model_state_dict(model, options=FULL_ON_RANK0)


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict given whole on rank 0 (other ranks pass {}) into a wrapped model: sharded or broadcast. A collective."""
    set_model_state_dict(model, state, options=FROM_RANK0)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's unsharded state on rank 0, laid out as one process's `optimizer.state_dict()`; {} elsewhere. A collective.

    Parameters are numbered in the optimizer's group order, so the result is what a single-process
    run with the same parameter groups would save (its checkpoints and this one are interchangeable).
    Like `full_model_state`, whole cpu tensors (DDP on the cpu, AdamW's step counts) are the live ones.
    """
    by_name = get_optimizer_state_dict(model, optimizer, options=FULL_ON_RANK0)
    if not by_name:
        return {}
    names = _parameter_names(model, optimizer)
    groups, start = [], 0
    for group, saved in zip(optimizer.param_groups, by_name["param_groups"]):
        indices = list(range(start, start + len(group["params"])))
        groups.append({**saved, "params": indices})
        start += len(indices)
    state = {index: by_name["state"][name] for index, name in enumerate(names) if name in by_name["state"]}
    return {"state": state, "param_groups": groups}


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load `full_optimizer_state`'s layout, given on rank 0 (other ranks pass {}), into the optimizer of a wrapped model."""
    by_name: dict[str, Any] = {}
    if state:
        names = _parameter_names(model, optimizer)
        by_name = {
            "state": {names[int(index)]: values for index, values in state["state"].items()},
            "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]} for group in state["param_groups"]],
        }
    set_optimizer_state_dict(model, optimizer, by_name, options=FROM_RANK0)


def _parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each of the optimizer's parameters, in group order (names of the unwrapped model)."""
    name_of = {id(p): name for name, p in unwrap_model(model).named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """The mean of `value` over ranks (e.g. the loss of the global batch when local batches are equal)."""
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size


def gather_per_rank(value: int) -> list[int]:
    """`value` from every rank, in rank order (e.g. each rank's peak memory in bytes); [value] without a group."""
    if not dist.is_initialized():
        return [int(value)]
    gathered: list[int | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, int(value))
    return [int(v) for v in gathered if v is not None]


def local_tensors(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's local part (a DTensor's shard, a plain tensor itself): what this rank stores."""
    from torch.distributed.tensor import DTensor

    return [t.to_local() if isinstance(t, DTensor) else t for t in tensors]


def broadcast_from_main(value: T, info: DistInfo) -> T:
    """Rank 0's `value` on every rank (pickled within the process group: its own processes' data only)."""
    carrier = [value if info.is_main else None]
    dist.broadcast_object_list(carrier, src=0)
    return carrier[0]


def run_on_main(function: Callable[[], T], info: DistInfo | None) -> T | None:
    """`function()` on rank 0 alone (file work): its result there, None on the other ranks; a `BwskError` it
    raises is raised on every rank, so no rank is left waiting in a collective for a rank 0 that refused.

    Without `info` (one process): `function()`.
    """
    if info is None:
        return function()
    result, failure = None, None
    if info.is_main:
        try:
            result = function()
        except BwskError as error:
            failure = error
    message = broadcast_from_main(None if failure is None else failure.render(), info)
    if failure is not None:
        raise failure
    if message is not None:
        raise BwskError(message)
    return result
