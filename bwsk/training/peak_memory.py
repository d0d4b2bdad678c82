"""A training run's peak memory in bytes, kept in its `LoopState` (so checkpoints carry it).

    tracker = step_tracker(device, state, model, optimizer)
    with tracker if tracker is not None else contextlib.nullcontext():
        ...one training step...
    record_step_peak(state, device, tracker, step)

Invariants: on CUDA the peak is the allocator's maximum over training steps; on the cpu it is MemTracker's count
over the first training step this process runs (MemTracker is slow on every step), and other devices have none.
Evaluation is not included: `exclude_evaluation` resets the CUDA counter after one.
"""

from __future__ import annotations

import torch
from torch.distributed._tools.mem_tracker import MemTracker

from bwsk.training.loop_state import LoopState


def step_tracker(device: torch.device, state: LoopState, *tracked: object) -> MemTracker | None:
    """A MemTracker counting `tracked` (model, optimizer) for the next step on the cpu while no peak is known; else None."""
    if device.type != "cpu" or state.peak_memory_bytes is not None:
        return None
    tracker = MemTracker()
    tracker.track_external(*tracked)
    return tracker


def record_step_peak(state: LoopState, device: torch.device, tracker: MemTracker | None, step: int) -> None:
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


def _tracker_peak(tracker: MemTracker) -> int:
    """MemTracker's peak total over every device it saw."""
    peaks = tracker.get_tracker_snapshot("peak")
    return int(sum(int(categories.get("Total", 0)) for categories in peaks.values()))
