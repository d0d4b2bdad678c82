"""`LoopState`: where a training loop is and what it has seen; everything a checkpoint stores besides tensors (JSON only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
