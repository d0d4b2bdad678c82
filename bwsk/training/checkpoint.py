"""Checkpoints without pickles: tensors in safetensors files, everything else in JSON, each written atomically.

A checkpoint is a folder `ROOT/step-NNNNNNNN/` (`step-NNNNNNNN.K/` for a later one of the same step) holding
  model.safetensors      the weights (shared tensors stored once)
  config.json            the model's Hugging Face config, when it has one (the folder then loads as a model)
  optimizer.safetensors  every tensor of the optimizer's per-parameter state, keyed `PARAM_INDEX.NAME`
  rng.safetensors        the torch RNG states (cpu, and each CUDA device)
  state.json             the optimizer's param groups and non-tensor state, the grad scaler, and the caller's state
It is written into a temporary folder and renamed into place; only then does
`ROOT/latest.json` (replaced atomically) point at it, so a run killed at any moment
leaves the previous checkpoint intact and named. Older step folders are then removed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError, SourceError

LATEST = "latest.json"
STEP_PREFIX = "step-"


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    *,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write the checkpoint of optimizer step `step` under `root` and point `latest.json` at it; returns its folder."""
    root.mkdir(parents=True, exist_ok=True)
    final, again = root / f"{STEP_PREFIX}{step:08d}", 0
    while final.exists():  # a second checkpoint of one step (its state moved on): a new name, so the old one stays valid
        again += 1
        final = root / f"{STEP_PREFIX}{step:08d}.{again}"
    temporary = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    _write_folder(temporary, model, optimizer, state, scaler)
    os.replace(temporary, final)
    write_atomic(str(root / LATEST), json.dumps({"folder": final.name, "step": step}), force=True)
    for old in root.glob(f"{STEP_PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The folder `latest.json` names, or None when there is no checkpoint."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    try:
        folder = root / json.loads(pointer.read_text())["folder"]
    except (ValueError, KeyError, TypeError, OSError):
        raise SourceError(f"{pointer}: unreadable checkpoint pointer") from None
    if not folder.is_dir() or folder.parent != root:
        raise SourceError(f"{pointer}: names a missing checkpoint folder {folder.name}")
    return folder


def load_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, scaler: torch.amp.GradScaler | None = None
) -> dict[str, Any]:
    """Restore weights, optimizer, grad scaler and RNG states from `folder`; returns the caller's state."""
    try:
        state = json.loads((folder / "state.json").read_text())
        load_weights(model, folder / "model.safetensors")
        tensors = load_file(folder / "optimizer.safetensors")
        rng = load_file(folder / "rng.safetensors")
    except (OSError, ValueError) as error:
        raise SourceError(f"{folder}: unreadable checkpoint ({error})") from None
    optimizer.load_state_dict(_optimizer_state(state["optimizer"], tensors))
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in rng])
    return state["trainer"]


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's weights as one safetensors file, replaced atomically."""
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    save_model(model, str(temporary))
    os.replace(temporary, path)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a safetensors file written by `save_weights` into `model` (every key must match)."""
    missing, unexpected = load_model(model, str(path), strict=False, device=str(next(model.parameters()).device))
    if missing or unexpected:
        raise BwskError(f"{path}: weights do not match the model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")


def _write_folder(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], scaler: torch.amp.GradScaler | None
) -> None:
    save_model(model, str(folder / "model.safetensors"))
    config = getattr(model, "config", None)
    if hasattr(config, "to_json_file"):
        config.to_json_file(str(folder / "config.json"))
    tensors, optimizer_json = _split_optimizer_state(optimizer.state_dict())
    save_file(tensors, str(folder / "optimizer.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(folder / "rng.safetensors"))
    document = {"optimizer": optimizer_json, "scaler": scaler.state_dict() if scaler is not None else None, "trainer": state}
    (folder / "state.json").write_text(json.dumps(document, allow_nan=False))


def _split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's tensors (to safetensors, contiguous, on the cpu) and the rest (to JSON)."""
    tensors, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_state(saved: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The optimizer state dict rebuilt from `_split_optimizer_state`'s two halves."""
    state: dict[int, dict[str, Any]] = {int(index): dict(values) for index, values in saved["scalars"].items()}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in saved["param_groups"]]
    return {"state": state, "param_groups": groups}
