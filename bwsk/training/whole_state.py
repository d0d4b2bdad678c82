"""The whole state of a run's model, optimizer and random generators in one process's layout, distributed or not.

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

from typing import Any

import torch
from torch import nn

from bwsk.training.distributed import (
    DistInfo,
    broadcast_from_main,
    full_model_state,
    full_optimizer_state,
    gather_per_rank,
    load_full_model_state,
    load_full_optimizer_state,
    unwrap_model,
)


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
