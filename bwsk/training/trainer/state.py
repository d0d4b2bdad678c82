"""`LoopState`: where a training loop is and what it has seen; everything a checkpoint stores besides tensors (JSON only).

`EarlyStopping` keeps its counters in it, and so does the peak memory of the run's steps, in bytes:

    tracker = step_tracker(device, state, model, optimizer)
    with tracker if tracker is not None else contextlib.nullcontext():
        ...one training step...
    record_step_peak(state, device, tracker, step)

Invariants: on CUDA the peak is the allocator's maximum over training steps; on the cpu it is MemTracker's count
over the first training step this process runs (MemTracker is slow on every step), and other devices have none.
Evaluation is not included: `exclude_evaluation` resets the CUDA counter after one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from bwsk.errors import BwskError, SourceError
from bwsk.training.modes.peak_tracker import PeakTracker
from bwsk.training.trainer.field_types import is_count, is_number, require_field_types


@dataclass
class LoopState:
    """The loop's position and history; rank 0's is checkpointed and every rank resumes from it."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # index of the next batch of `epoch`
    tokens: int = 0  # over all processes
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # up to the last checkpoint
    best_valid_nll: float | None = None
    best_step: int = 0
    stale_evaluations: int = 0
    last_loss: float | None = None
    peak_memory_bytes: int | None = None  # this process's
    peak_memory_per_rank: list[int] | None = None  # every process's, as of the last checkpoint
    peak_memory_source: str = ""
    metrics_bytes: int = 0
    pending_validation: bool = False  # interrupted during the validation of `step`: it runs first on resume
    drift: dict[str, Any] | None = None
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, values: Any, where: str) -> LoopState:
        """The state a checkpoint's state.json holds (`asdict` of one; `where` names it in messages); wrong types,
        negative counts or missing positions are a one-line SourceError. Fields an older bwsk did not write take their defaults."""
        if not isinstance(values, dict):
            raise SourceError(f"{where}: not a JSON object")
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise SourceError(f"{where}: unknown field {unknown[0]!r}")
        missing = [name for name in REQUIRED if name not in values]
        if missing:
            raise SourceError(f"{where}: no {missing[0]}")
        try:
            require_field_types(cls, values, lambda name: f"{where}.{name}")
        except BwskError as error:
            raise SourceError(error.message) from None
        counts = [name for name in COUNTS if values.get(name) is not None and not is_count(values[name])]
        if counts:
            raise SourceError(f"{where}.{counts[0]} must be a whole number >= 0, not {values[counts[0]]!r}")
        state = cls(**values)
        state.evaluations = [_evaluation(record, where) for record in _list(state.evaluations, f"{where}.evaluations")]
        if state.peak_memory_per_rank is not None and not all(
            is_count(v) for v in _list(state.peak_memory_per_rank, f"{where}.peak_memory_per_rank")
        ):
            raise SourceError(f"{where}.peak_memory_per_rank must be whole numbers >= 0")
        if state.drift is not None and not (
            isinstance(state.drift, dict) and is_count(state.drift.get("step")) and is_number(state.drift.get("max_relative_error"))
        ):
            raise SourceError(f"{where}.drift must be an object with a step and a max_relative_error")
        return state


@dataclass(frozen=True)
class EarlyStopping:
    """Stop once `patience` validations in a row have not lowered the best validation loss.

    Its counters are `LoopState` fields (best_valid_nll, best_step, stale_evaluations), so a checkpoint carries them.
    """

    patience: int

    def improved(self, state: LoopState, nll: float) -> bool:
        """Record the validation loss `nll` of `state.step`; True when it is the best so far (the caller keeps its weights)."""
        if state.best_valid_nll is None or nll < state.best_valid_nll:
            state.best_valid_nll, state.best_step, state.stale_evaluations = nll, state.step, 0
            return True
        state.stale_evaluations += 1
        return False

    def stop_reason(self, state: LoopState) -> str | None:
        """Why the run stops now, or None."""
        return f"early stopping (patience {self.patience})" if state.stale_evaluations >= self.patience else None


REQUIRED = ("step", "epoch", "batch", "tokens", "metrics_bytes", "evaluations")  # where the loop is: never defaulted
COUNTS = ("step", "epoch", "batch", "tokens", "best_step", "stale_evaluations", "metrics_bytes", "peak_memory_bytes")
EVALUATION = {"step": is_count, "split": lambda value: isinstance(value, str), "nll": is_number, "perplexity": is_number}


def _list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise SourceError(f"{name} must be a list, not {value!r}")
    return value


def _evaluation(record: Any, where: str) -> dict[str, Any]:
    """One validation record: an object with a whole step, a split name and numeric nll and perplexity."""
    if not (isinstance(record, dict) and all(check(record.get(key)) for key, check in EVALUATION.items())):
        raise SourceError(f"{where}.evaluations: {record!r} is not an evaluation (step, split, nll, perplexity)")
    return record


def step_tracker(device: torch.device, state: LoopState, *tracked: object) -> PeakTracker | None:
    """A MemTracker counting `tracked` (model, optimizer) for the next step on the cpu while no peak is known; else None."""
    if device.type != "cpu" or state.peak_memory_bytes is not None:
        return None
    tracker = PeakTracker()
    tracker.track_external(*tracked)
    return tracker


def record_step_peak(state: LoopState, device: torch.device, tracker: PeakTracker | None, step: int) -> None:
    """Fold training step `step` (1-based, just run under `step_tracker`'s `tracker`) into the state's peak."""
    if tracker is not None:
        state.peak_memory_bytes = _tracker_peak(tracker)
        state.peak_memory_source = f"MemTracker, training step {step} (the first this process ran)"
    elif device.type == "cuda":
        state.peak_memory_bytes = max(state.peak_memory_bytes or 0, torch.cuda.max_memory_allocated(device))
        state.peak_memory_source = "CUDA allocator, maximum over training steps"


def exclude_evaluation(device: torch.device) -> None:
    """After an evaluation: restart the CUDA peak counter, so the next step's maximum is of training alone."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _tracker_peak(tracker: PeakTracker) -> int:
    """The tracker's peak total over every device it saw."""
    return tracker.categories("peak").get("Total", 0)
