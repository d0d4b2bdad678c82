"""`TrainConfig`: every knob of a training run, with the earlier work's setup as the defaults.

AdamW, cosine schedule after a linear warmup, gradient clipping at 1.0, bf16 autocast,
batch 2 x 512 (the sequence capped at the model's positions; under `distributed`, 2 per
process: the global batch is 2 x the number of processes), evaluation each epoch,
early stopping after 3 evaluations without a better validation loss. Knobs left None
are resolved against the model and the data by `resolved` (the learning rate from
whether the run fine-tunes, the sequence from the model's positions, the warmup from the
planned steps, the evaluation window from the sequence); results record the resolved values.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bwsk.errors import BwskError
from bwsk.training.choices import (
    DEFAULT_BUDGET,
    DEFAULT_DRIFT_TOLERANCE,
    KERNELS,
    MODES,
    PRECISIONS,
    STRATEGIES,
    parse_budget,
    require_choice,
)
from bwsk.training.trainer.field_types import is_number, require_field_types

if TYPE_CHECKING:
    import torch

DEFAULT_SEQ = 512
FINETUNE_LR = 5e-5
SCRATCH_LR = 3e-4
WARMUP_SHARE = 0.05
SAVED_BEFORE_KNOB = {"kernels": "torch"}  # what runs saved before a knob existed ran with (they resume unchanged)
MAX_SEED = 2**32 - 1  # the sampler mixes seed and epoch into one 64-bit generator seed; ranks add their index
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]{1,4})?")


@dataclass(frozen=True)
class TrainConfig:
    """The knobs of one run (see the module docstring for the defaults)."""

    mode: str = "conventional"
    seed: int = 0
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 2
    seq_len: int | None = None  # None: min(512, the model's positions)
    lr: float | None = None  # None: 5e-5 to fine-tune, 3e-4 from scratch
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8  # AdamW's epsilon (its denominator's floor)
    warmup_steps: int | None = None  # None: 5% of the planned steps
    min_lr_ratio: float = 0.0  # the cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    precision: str = "bf16"
    patience: int = 3
    eval_every: int | None = None  # steps between evaluations; None: once per epoch
    eval_window: int | None = None  # None: seq_len
    eval_stride: int | None = None  # None: eval_window // 2
    eval_batch_size: int = 8
    checkpoint_every: int = 500
    budget: int | float | str = DEFAULT_BUDGET  # the analyzed mode's activation bytes: bytes, "6GiB", or a fraction of conventional's
    drift_every: int = 100  # reversible runs: steps between rebuild-error measurements
    drift_tolerance: float = DEFAULT_DRIFT_TOLERANCE  # reversible runs: rebuild error above which anchors or recompute are re-planned
    kernels: str = "auto"  # the reversible mode's seams: "torch", "triton", or "auto" (Triton on CUDA); see `modes.seam_kernels`
    device: str = "auto"  # under `distributed`: "cpu" for gloo on the cpu, else the GPU of each process's local rank (nccl)
    distributed: str | None = None  # "ddp" or "fsdp" under torchrun; batch_size is then per process
    optimizer_in_backward: bool = False  # step each parameter in backward once its gradient is final (`trainer.optimizer_in_backward`)

    def __post_init__(self) -> None:
        """Every knob of the right type and in its range (a run.json is read back through here too); the budget is
        kept parsed (`parse_budget`: whole bytes or a fraction), so "6GiB" and 6442450944 are the same config."""
        require_field_types(TrainConfig, self.__dict__, _flag)
        object.__setattr__(self, "budget", parse_budget(self.budget, "--budget"))
        require_choice(self.mode, MODES, "training mode")
        if self.distributed is not None:
            require_choice(self.distributed, STRATEGIES, "distributed strategy")
        require_choice(self.kernels, KERNELS, "kernels")
        require_choice(self.precision, PRECISIONS, "precision")
        if not DEVICE.fullmatch(self.device):
            raise BwskError(f"unknown device {self.device!r} (expected auto, cpu, cuda or cuda:N)")
        positive = ("epochs", "max_steps", "batch_size", "seq_len", "eval_every", "eval_window", "eval_stride", "eval_batch_size")
        for name in (*positive, "checkpoint_every", "drift_every", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BwskError(f"{_flag(name)} must be at least 1, not {value}")
        if not 0 <= self.seed <= MAX_SEED:
            raise BwskError(f"--seed must be from 0 to {MAX_SEED} (2**32 - 1), not {self.seed}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise BwskError(f"--warmup-steps must be at least 0, not {self.warmup_steps}")
        for name in ("lr", "weight_decay", "grad_clip", "adam_eps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise BwskError(f"{_flag(name)} must be a finite number >= 0, not {value}")
        if not self.drift_tolerance > 0:
            raise BwskError(f"--drift-tolerance must be a number > 0, not {self.drift_tolerance}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise BwskError(f"--min-lr-ratio must be from 0 to 1, not {self.min_lr_ratio}")
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in self.betas)):
            raise BwskError(f"betas must be two numbers from 0 to below 1, not {self.betas}")
        if self.optimizer_in_backward and self.grad_clip > 0:
            raise BwskError(
                "--optimizer-in-backward cannot clip by the global gradient norm (it needs every gradient at once): add --grad-clip 0"
            )
        if self.optimizer_in_backward and self.precision == "fp16":
            raise BwskError(
                "--optimizer-in-backward does not work with --precision fp16 (its scaler unscales after the backward): use bf16 or fp32"
            )
        if self.optimizer_in_backward and self.distributed is not None:
            raise BwskError(
                f"--optimizer-in-backward runs in one process (under --distributed {self.distributed} each would step on its own unreduced "
                "gradients): drop one of the two"
            )

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of `precision` (None for fp32: no autocast)."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def sequence_length(self, max_positions: int | None) -> int:
        """Tokens per training sequence: `seq_len`, else DEFAULT_SEQ capped at the model's positions."""
        return self.seq_len or min(DEFAULT_SEQ, max_positions or DEFAULT_SEQ)

    def resolved(self, *, pretrained: bool, max_positions: int | None, steps_per_epoch: int) -> TrainConfig:
        """This config with every None knob given its value for this model and data."""
        seq = self.sequence_length(max_positions)
        if max_positions is not None and seq > max_positions:
            raise BwskError(f"--seq-len {seq} exceeds the model's {max_positions} positions")
        window = self.eval_window or seq
        if max_positions is not None and window > max_positions:
            raise BwskError(f"--eval-window {window} exceeds the model's {max_positions} positions")
        if window < 2:
            raise BwskError("--eval-window must be at least 2 tokens")
        stride = self.eval_stride or window // 2
        if stride >= window:
            raise BwskError(f"--eval-stride {stride} must be shorter than the evaluation window {window} (each scored token needs context)")
        planned = self.planned_steps(steps_per_epoch)
        warmup = self.warmup_steps if self.warmup_steps is not None else max(1, round(WARMUP_SHARE * planned))
        lr = self.lr if self.lr is not None else (FINETUNE_LR if pretrained else SCRATCH_LR)
        return dataclasses.replace(self, seq_len=seq, eval_window=window, eval_stride=stride, warmup_steps=warmup, lr=lr)

    def require_seeds(self, seeds: int) -> None:
        """Refuse `seeds` runs with seeds `seed`, `seed` + 1, ... unless there is at least one and the last is in range."""
        if seeds < 1:
            raise BwskError(f"--seeds must be at least 1, not {seeds}")
        if self.seed + seeds - 1 > MAX_SEED:
            raise BwskError(f"--seed {self.seed} with --seeds {seeds} would run seeds up to {self.seed + seeds - 1}, beyond {MAX_SEED}")

    def planned_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps the schedule is planned for: `max_steps`, else every batch of every epoch."""
        return self.max_steps if self.max_steps is not None else self.epochs * steps_per_epoch

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_json(cls, values: Any) -> TrainConfig:
        """The config `to_json` wrote; one saved before a knob existed gets what that run did (kernels: torch seams).

        Anything else (not an object, unknown knobs, wrong types, values out of range) is a one-line BwskError.
        """
        if not isinstance(values, dict):
            raise BwskError("the training settings are not a JSON object")
        values = {**SAVED_BEFORE_KNOB, **values}
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise BwskError(f"unknown training setting(s) {', '.join(sorted(map(str, unknown)))}")
        betas = values.get("betas", cls.betas)
        if not isinstance(betas, list | tuple):
            raise BwskError(f"betas must be two numbers from 0 to below 1, not {betas!r}")
        return cls(**{**values, "betas": tuple(betas)})


def _flag(name: str) -> str:
    """The command-line flag of a knob."""
    return "--" + name.replace("_", "-")


def learning_rate(step: int, *, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warmup to `lr`, then a cosine down to lr * min_lr_ratio."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay, 1.0)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
