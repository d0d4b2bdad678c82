"""What a finished run reports (`training_results.json`), and the mean and spread of a quantity over seeds.

Only a run that finished with finite losses writes a `RunResult`; a NaN run writes none.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bwsk.atomic import write_atomic

RESULTS_FILE = "training_results.json"


@dataclass(frozen=True)
class RunResult:
    """One run: its inputs, its evaluation, its cost. Memory in bytes, times in seconds."""

    model: str
    start: str  # "fine-tune" (pretrained weights) or "scratch" (random init)
    mode: str
    seed: int
    config: dict[str, Any]
    data: str
    tokens: dict[str, int]
    perplexity_method: str
    valid: dict[str, Any]
    test: dict[str, Any]
    steps: int
    epochs_completed: int
    stopped: str  # "max steps (N)", "epochs (N)", or "early stopping (patience P)": P validations without a better loss
    best_valid_step: int
    final_train_loss: float
    final_valid_loss: float
    peak_memory_bytes: int | None
    peak_memory_source: str
    tokens_per_s: float
    train_seconds: float
    wall_seconds: float
    device: str
    drift: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None
    saved_model: str = ""
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1  # processes of a distributed run (`config["distributed"]`: ddp or fsdp)
    peak_memory_per_rank: list[int] | None = None  # each process's peak, in rank order; peak_memory_bytes is their maximum

    @property
    def valid_perplexity(self) -> float:
        return self.valid["perplexity"]

    @property
    def test_perplexity(self) -> float:
        return self.test["perplexity"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: Path) -> Path:
        path = folder / RESULTS_FILE
        write_atomic(str(path), json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n", force=True)
        return path


def read_result(folder: Path) -> RunResult:
    """The `RunResult` a run wrote into `folder`."""
    return RunResult(**json.loads((folder / RESULTS_FILE).read_text()))


def summarize(values: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value), min, max and count of `values` (all finite)."""
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"summarize needs finite values, got {values}")
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": spread, "min": min(values), "max": max(values), "n": len(values)}
