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

Where a run computes: one device (`resolve_device`), or one process of a torchrun job (`join_process_group`).

Under `config.distributed` each process takes the device `setup_distributed` gives it: the GPU
of its local rank with nccl, or the cpu with gloo when `--device cpu` is asked for. A run that
is not distributed refuses to start as several processes (each would train alone into the same folder).

`WholeState`: a run's model, optimizer and random generators in one process's layout, distributed or not.

    whole = WholeState(model, optimizer, info)          # info None: one process; else the model is DDP- or FSDP2-wrapped
    weights = whole.weights()                           # under DDP/FSDP2 a collective: every rank calls
    if whole.is_main: write(weights)                    # whole on rank 0, {} on the other ranks
    whole.load_weights(read() if whole.is_main else {}) # also a collective: rank 0's tensors reach every shard

Invariants: weights carry the unwrapped model's names, each tied (aliased) tensor once
(loading restores the aliases); the optimizer state is laid out as one process's
`optimizer.state_dict()` with the same parameter groups, so checkpoints of distributed and
single-process runs have one form; RNG states are kept per rank, so a resumed rank draws
what it would have drawn. Tensors may be the live ones (one process, DDP on the cpu):
write them before the next step.
"""

from __future__ import annotations

import os
import time
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
from bwsk.training.blocks import block_list
from bwsk.training.choices import STRATEGIES, require_choice

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
    require_choice(strategy, STRATEGIES, "distributed strategy")
    if strategy == "ddp":
        return DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    from bwsk.training.reversible.convert import RUNTIME_ATTRIBUTE

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
    from bwsk.training.reversible.convert import reversible_runtime

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


def resolve_device(name: str) -> torch.device:
    """ "auto": CUDA when available, else the cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BwskError(f"unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BwskError(f"--device {name}: no CUDA device on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BwskError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return device


def join_process_group(strategy: str | None, device: str) -> DistInfo | None:
    """The process group of a run under `strategy` ("ddp", "fsdp") on `device` ("auto", "cpu", "cuda[:N]"); None for one process."""
    if strategy is None:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes > 1:
            raise BwskError(
                f"started as {processes} processes but not distributed: each would train alone into the same folder "
                "(pass --distributed ddp or fsdp)"
            )
        return None
    if device != "auto":
        resolve_device(device)
    return setup_distributed("gloo" if device == "cpu" else None)


def synchronized_time(device: torch.device) -> float:
    """`time.perf_counter()` once the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def describe_device(device: torch.device, info: DistInfo | None, strategy: str | None) -> str:
    """The device in words for results, e.g. "2 x cpu (1 threads), fsdp over gloo"."""
    one = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return one if info is None else f"{info.world_size} x {one}, {strategy} over {info.backend}"


class WholeState:
    """Reads and writes the whole state of `model` (wrapped when `info` is given) and `optimizer`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo | None):
        self.model, self.optimizer, self.info = model, optimizer, info
        self.aliases = tied_aliases(unwrap_model(model))

    @property
    def is_main(self) -> bool:
        return self.info is None or self.info.is_main

    def weights(self) -> dict[str, torch.Tensor]:
        """Every weight and persistent buffer, each tied tensor once; {} on ranks other than 0."""
        state = unwrap_model(self.model).state_dict() if self.info is None else full_model_state(self.model)
        return {name: tensor for name, tensor in state.items() if name not in self.aliases}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load `weights()`'s form (given on rank 0; {} elsewhere); every name must match."""
        if weights:
            weights = {**weights, **{alias: weights[kept] for alias, kept in self.aliases.items()}}
        if self.info is None:
            unwrap_model(self.model).load_state_dict(weights)
        else:
            load_full_model_state(self.model, weights)

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state as one process's `state_dict()`; {} on ranks other than 0."""
        return self.optimizer.state_dict() if self.info is None else full_optimizer_state(self.model, self.optimizer)

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        if self.info is None:
            self.optimizer.load_state_dict(state)
        else:
            load_full_optimizer_state(self.model, self.optimizer, state)

    def rng_states(self) -> dict[str, torch.Tensor]:
        """The generators' states: "cpu" and "cuda.I" (every device) for one process, "rank.R.cpu" / "rank.R.cuda" per rank."""
        if self.info is None:
            states = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                states.update({f"cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
            return states
        gathered = [None] * self.info.world_size
        torch.distributed.all_gather_object(gathered, self._own_rng())
        return {f"rank.{rank}.{name}": state for rank, own in enumerate(gathered) for name, state in own.items()}

    def load_rng_states(self, states: dict[str, torch.Tensor]) -> None:
        """Restore `rng_states()`'s form (given on rank 0 when distributed; {} elsewhere)."""
        if self.info is None:
            torch.set_rng_state(states["cpu"])
            if torch.cuda.is_available():
                torch.cuda.set_rng_state_all([states[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in states])
            return
        states = broadcast_from_main(states, self.info)
        prefix = f"rank.{self.info.rank}."
        torch.set_rng_state(states[prefix + "cpu"])
        if self.info.device.type == "cuda":
            torch.cuda.set_rng_state(states[prefix + "cuda"], self.info.device)

    def _own_rng(self) -> dict[str, torch.Tensor]:
        own = {"cpu": torch.get_rng_state()}
        if self.info is not None and self.info.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(self.info.device)
        return own

    def per_rank(self, value: int) -> list[int]:
        """`value` from every rank in rank order (one process: [value]). A collective."""
        return gather_per_rank(value) if self.info is not None else [int(value)]


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """Names of the state dict that repeat an earlier name's tensor (tied weights), mapped to that first name."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    saved = model.state_dict().keys()
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        kept = first.setdefault(id(tensor), name)
        if kept != name and name in saved:
            aliases[name] = kept
    return aliases
