"""Checkpoints without pickles: tensors in safetensors files, everything else in JSON, each written atomically.

A checkpoint is a folder `ROOT/step-NNNNNNNN/` (`step-NNNNNNNN.K/` for a later one of the same step) holding
  model.safetensors      the weights (tied tensors stored once)
  config.json            the config the caller gives (the trainer: `saved_config`, bwsk_reversible for a reversible
                         model), so the folder loads with AutoModelForCausalLM as the function being trained
  optimizer.safetensors  every tensor of the optimizer's per-parameter state, keyed `PARAM_INDEX.NAME`
  rng.safetensors        the torch RNG states (cpu and CUDA; of every rank in a distributed run)
  state.json             the optimizer's param groups and non-tensor state, the grad scaler, and the caller's state
It is written into a temporary folder and renamed into place; only then does
`ROOT/latest.json` (replaced atomically) point at it, so a run killed at any moment
leaves the previous checkpoint intact and named. Older step folders are then removed.
Beside them, `best.safetensors` holds the weights of the best validation loss (`BestWeights`).
`save_run_state` / `restore_run_state` write and load a run's whole state (collectives under torchrun).

A checkpoint read from a run folder is checked against the run that resumes from it before anything is
loaded: a run folder can be damaged or edited by hand. Loaded unchecked, a checkpoint fails deep inside torch
(weights or random-generator states of the wrong shape), or later still: an optimizer state of the wrong
shape fails at the first step, a batch index beyond the epoch never ends it. `require_checkpoint_fits`
names the checkpoint and the first thing that does not fit, in one line.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError, SourceError, first_line
from bwsk.training.distributed import WholeState, broadcast_from_main, run_on_main
from bwsk.training.trainer.field_types import is_number
from bwsk.training.trainer.state import LoopState

LATEST = "latest.json"
BEST_WEIGHTS = "best.safetensors"  # beside the step folders: the weights of the best validation loss so far
STEP_PREFIX = "step-"


@dataclass
class Checkpoint:
    """What a checkpoint holds: `WholeState`'s forms of the weights, optimizer and RNG, the grad scaler, the caller's state."""

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    trainer: dict[str, Any]
    scaler: dict[str, Any] | None = None


def save_checkpoint(root: Path, step: int, checkpoint: Checkpoint, *, model_config: Any = None) -> Path:
    """Write the checkpoint of optimizer step `step` under `root` and point `latest.json` at it; returns its folder.

    `model_config`: the Hugging Face config of the model's saved folder (written as config.json, so the folder loads as that model).
    """
    root.mkdir(parents=True, exist_ok=True)
    final, again = root / f"{STEP_PREFIX}{step:08d}", 0
    while final.exists():  # a second checkpoint of one step (its state moved on): a new name, so the old one stays valid
        again += 1
        final = root / f"{STEP_PREFIX}{step:08d}.{again}"
    temporary = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    _write_folder(temporary, checkpoint, model_config)
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


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read the checkpoint in `folder`; a damaged one (a file missing, unreadable or of the wrong form) is a one-line SourceError.

    Whether it fits the run that reads it is `bwsk.training.trainer.checkpoint`'s question.
    """
    path = folder / "state.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise SourceError(f"{path}: unreadable checkpoint state ({first_line(error)})") from None
    if not (isinstance(state, dict) and isinstance(state.get("optimizer"), dict) and isinstance(state.get("scaler", {}), dict | None)):
        raise SourceError(f"{path}: not a checkpoint's state (an object with optimizer, trainer and scaler)")
    weights, tensors, rng = (read_tensors(folder / name) for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"))
    try:
        optimizer = _optimizer_state(state["optimizer"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise SourceError(f"{path}: not a checkpoint's optimizer state ({first_line(error)})") from None
    return Checkpoint(weights, optimizer, rng, state.get("trainer"), state.get("scaler"))


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's weights as one safetensors file (tied tensors once), replaced atomically."""
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    save_model(model, str(temporary))
    os.replace(temporary, path)


def write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """`tensors` (no two sharing memory) as one safetensors file, replaced atomically."""
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}, str(temporary))
    os.replace(temporary, path)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, on the cpu; a missing, truncated or malformed file is a one-line SourceError."""
    try:
        return load_file(path)
    except (OSError, ValueError, SafetensorError) as error:
        raise SourceError(f"{path}: unreadable tensors ({first_line(error)})") from None


def save_run_state(root: Path, state: LoopState, whole: WholeState, *, scaler: dict[str, Any] | None, model_config: Any) -> None:
    """Checkpoint a run's whole state under `root` (a collective: every rank calls it; rank 0 writes)."""
    weights, optimizer, rng = whole.weights(), whole.optimizer_state(), whole.rng_states()
    if whole.is_main:
        save_checkpoint(root, state.step, Checkpoint(weights, optimizer, rng, asdict(state), scaler), model_config=model_config)


def restore_run_state(
    root: Path, whole: WholeState, *, scaler: dict[str, Any] | None, batches_per_epoch: int, world_size: int
) -> tuple[LoopState, dict[str, Any] | None]:
    """Load the latest checkpoint under `root` into `whole`; returns the loop state and the grad scaler's state.

    Rank 0 reads the checkpoint and checks it against this run (`scaler`: the run's own scaler state, for its
    shape) before anything is loaded; every rank gets the same state (a collective)."""
    info = whole.info
    weights, rng = whole.weights(), whole.rng_states()  # collectives: every rank

    def read() -> tuple[Checkpoint, LoopState]:
        folder = latest_checkpoint(root)
        if folder is None:
            raise BwskError(f"{root.parent}: no checkpoint to resume from (the run stopped before its first one)")
        checkpoint = load_checkpoint(folder)
        state = LoopState.from_json(checkpoint.trainer, f"{folder / 'state.json'}: trainer")
        require_position_fits(state, folder, batches_per_epoch=batches_per_epoch, world_size=world_size)
        require_checkpoint_fits(checkpoint, folder, weights=weights, optimizer=whole.optimizer, rng=rng, scaler=scaler)
        return checkpoint, state

    def from_main(value: Any) -> Any:
        return value if info is None else broadcast_from_main(value, info)

    checkpoint, state = run_on_main(read, info) or (None, None)
    state = LoopState(**from_main(asdict(state) if state else None))
    if state.peak_memory_per_rank is not None:
        state.peak_memory_bytes = state.peak_memory_per_rank[0 if info is None else info.rank]
    whole.load_weights(checkpoint.weights if checkpoint else {})
    whole.load_optimizer_state(checkpoint.optimizer if checkpoint else {})
    whole.load_rng_states(checkpoint.rng if checkpoint else {})
    return state, from_main(checkpoint.scaler if checkpoint else None)


class BestWeights:
    """The weights of a run's best validation loss, in `root/best.safetensors` (rank 0 writes; every rank loads)."""

    def __init__(self, root: Path, whole: WholeState):
        self.path, self.whole = root / BEST_WEIGHTS, whole

    def save(self) -> None:
        """Keep the current weights (a collective)."""
        weights = self.whole.weights()
        if self.whole.is_main:
            self.path.parent.mkdir(exist_ok=True)
            write_tensors(weights, self.path)

    def restore(self) -> None:
        """Load the kept weights back (a collective)."""
        self.whole.load_weights(run_on_main(lambda: read_tensors(self.path), self.whole.info) or {})


def _write_folder(folder: Path, checkpoint: Checkpoint, model_config: Any) -> None:
    write_tensors(checkpoint.weights, folder / "model.safetensors")
    if hasattr(model_config, "to_json_file"):
        model_config.to_json_file(str(folder / "config.json"))
    tensors, optimizer_json = _split_optimizer_state(checkpoint.optimizer)
    save_file(tensors, str(folder / "optimizer.safetensors"))
    save_file({name: state.contiguous() for name, state in checkpoint.rng.items()}, str(folder / "rng.safetensors"))
    document = {"optimizer": optimizer_json, "scaler": checkpoint.scaler, "trainer": checkpoint.trainer}
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
    """The optimizer state dict rebuilt from `_split_optimizer_state`'s two halves (KeyError, TypeError or ValueError
    where they are not of that form)."""
    if not isinstance(saved["param_groups"], list) or not all(isinstance(group, dict) for group in saved["param_groups"]):
        raise TypeError("param_groups is not a list of objects")
    state: dict[int, dict[str, Any]] = {int(index): dict(values) for index, values in saved["scalars"].items()}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


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
