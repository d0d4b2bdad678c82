"""Whether a checkpoint read from a run folder fits the run that resumes from it, checked before anything is loaded.

A run folder can be damaged or edited by hand. Loaded unchecked, a checkpoint fails deep inside torch
(weights or random-generator states of the wrong shape), or later still: an optimizer state of the wrong
shape fails at the first step, a batch index beyond the epoch never ends it. `require_checkpoint_fits`
names the checkpoint and the first thing that does not fit, in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bwsk.errors import SourceError
from bwsk.training.checkpoint import Checkpoint
from bwsk.training.field_types import is_number
from bwsk.training.loop_state import LoopState

ADAMW_STATE = {"step", "exp_avg", "exp_avg_sq"}  # AdamW's per-parameter state (amsgrad off: `optimizer_step.adamw`)


def require_checkpoint_fits(
    checkpoint: Checkpoint,
    folder: Path,
    *,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    scaler: dict[str, Any] | None,
) -> None:
    """Refuse `checkpoint` (read from `folder`) unless it holds this run's tensors and settings.

    `weights`, `rng`, `scaler`: this run's own, in the forms the checkpoint stores; `optimizer`: this run's, fresh.
    """
    require_same_tensors(checkpoint.weights, weights, folder / "model.safetensors")
    require_same_tensors(checkpoint.rng, rng, folder / "rng.safetensors")
    require_optimizer_state_fits(checkpoint.optimizer, optimizer, folder)
    if scaler is not None and (not isinstance(checkpoint.scaler, dict) or checkpoint.scaler.keys() != scaler.keys()):
        raise SourceError(f"{folder / 'state.json'}: the gradient scaler's state does not hold {', '.join(scaler)}")


def require_same_tensors(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """The same names, and for each the same shape and dtype, as `expected`."""
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    if missing or unexpected:
        which = f"lacks {missing[0]}" if missing else f"holds {unexpected[0]}, which this run does not have"
        raise SourceError(f"{path}: {which}; not a checkpoint of this run")
    for name, tensor in saved.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise SourceError(
                f"{path}: {name} is {tensor.dtype} of shape {tuple(tensor.shape)}, not {want.dtype} of shape {tuple(want.shape)}"
            )


def require_optimizer_state_fits(saved: dict[str, Any], optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """The saved AdamW state: this run's parameter groups and settings (only the learning rate moves), and per parameter
    either nothing or AdamW's tensors (a one-element step, moments of the parameter's shape, floating point)."""
    where = folder / "state.json"
    fresh = optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    if len(groups) != len(fresh) or any(_settings(g) != _settings(f) or not is_number(g.get("lr")) for g, f in zip(groups, fresh)):
        raise SourceError(f"{where}: the optimizer's parameter groups differ from this run's (its settings or parameters)")
    shapes = [p.shape for group in optimizer.param_groups for p in group["params"]]
    for index, entries in saved["state"].items():
        where_entry = f"{folder / 'optimizer.safetensors'}: parameter {index}"
        if not 0 <= index < len(shapes):
            raise SourceError(f"{where_entry}: this run has {len(shapes)} parameters")
        if entries.keys() != ADAMW_STATE or not all(isinstance(value, torch.Tensor) for value in entries.values()):
            raise SourceError(f"{where_entry}: expected the tensors {', '.join(sorted(ADAMW_STATE))}, found {', '.join(sorted(entries))}")
        if entries["step"].numel() != 1 or not all(value.is_floating_point() for value in entries.values()):
            raise SourceError(f"{where_entry}: step must be one floating-point number and the moments floating point")
        for name in ADAMW_STATE - {"step"}:
            if entries[name].shape != shapes[index]:
                raise SourceError(f"{where_entry}: {name} has shape {tuple(entries[name].shape)}, the parameter {tuple(shapes[index])}")


def require_position_fits(state: LoopState, folder: Path, *, batches_per_epoch: int, world_size: int) -> None:
    """The loop's position is one this run reaches (a step per batch: step = epoch x batches per epoch + batch), its best
    step is one it evaluated, and it has a peak per process."""
    where = folder / "state.json"
    if state.batch > batches_per_epoch:
        raise SourceError(f"{where}: batch {state.batch} of an epoch of {batches_per_epoch} batches")
    if state.step != state.epoch * batches_per_epoch + state.batch:
        raise SourceError(
            f"{where}: step {state.step} is not batch {state.batch} of epoch {state.epoch} ({batches_per_epoch} batches each)"
        )
    if state.best_valid_nll is not None and all(record["step"] != state.best_step for record in state.evaluations):
        raise SourceError(f"{where}: the best step {state.best_step} is not among the evaluations")
    if state.peak_memory_per_rank is not None and len(state.peak_memory_per_rank) != world_size:
        raise SourceError(f"{where}: {len(state.peak_memory_per_rank)} peak(s) of memory for {world_size} process(es)")


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in group.items() if key != "lr"}
