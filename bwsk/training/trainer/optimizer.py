"""`OptimizerStep`: how a training run updates its weights: AdamW, the learning-rate schedule, precision, clipping.

    update = OptimizerStep(model, config, planned_steps=N, device=device, info=info)  # config resolved
    lr = update.set_learning_rate(step)                                               # step: 0-based
    loss, grad_norm = update(ids, step + 1, lr)

Invariants:
  - AdamW decays matrices only: biases and norm weights (the 1-D parameters) get no weight decay;
  - step `step` runs at `learning_rate(step)` of `bwsk.training.trainer.config` (linear warmup, then a cosine over the planned steps);
  - the forward runs under autocast to `config.precision`; fp16 (CUDA only) scales the loss with a gradient scaler,
    which skips a step whose gradients overflow (its norm is reported as -1); bf16 and fp32 need none;
  - gradients are clipped to `config.grad_clip` (0: measured, not clipped);
  - a non-finite loss (its mean over ranks, so every rank stops) or, without a scaler, gradient norm raises
    `TrainingDiverged` naming the step before the optimizer uses it;
  - with `config.optimizer_in_backward`, each parameter is stepped inside the backward as soon as its gradient is final
    and the gradient freed (`bwsk.training.trainer.optimizer_in_backward`): same weights as `grad_clip` 0 here, the
    same `optimizer` of record for checkpoints; a non-finite gradient norm is found once the parameters have moved.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bwsk.errors import BwskError
from bwsk.training.distributed import DistInfo, all_reduce_mean
from bwsk.training.language_model import autocast, next_token_loss
from bwsk.training.trainer.config import TrainConfig, learning_rate
from bwsk.training.trainer.optimizer_in_backward import OptimizerInBackward


class TrainingDiverged(BwskError):
    """The loss (or gradient norm) became NaN or infinite; the run stopped without results."""

    exit_code = 1  # bwsk-train's exit status for it (2 is a refused input)


def require_precision_fits(precision: str, device: torch.device) -> None:
    """Refuse fp16 off CUDA (its gradient scaler is CUDA's)."""
    if precision == "fp16" and device.type != "cuda":
        raise BwskError("--precision fp16 needs a CUDA device (use bf16 or fp32 on the cpu)")


class OptimizerStep:
    """One run's optimizer, gradient scaler and schedule (see the module docstring); `model` may be DDP- or FSDP2-wrapped."""

    def __init__(self, model: nn.Module, config: TrainConfig, *, planned_steps: int, device: torch.device, info: DistInfo | None):
        self.model, self.config, self.planned_steps, self.device, self.info = model, config, planned_steps, device, info
        self.optimizer = adamw(model, config)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.in_backward = OptimizerInBackward(model, self.optimizer) if config.optimizer_in_backward else None  # no scaler then

    def set_learning_rate(self, step: int) -> float:
        """Give every parameter group the learning rate of optimizer step `step` (0-based); returns it."""
        config = self.config
        lr = learning_rate(
            step, lr=config.lr, warmup_steps=config.warmup_steps, total_steps=self.planned_steps, min_lr_ratio=config.min_lr_ratio
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def __call__(self, ids: torch.Tensor, step: int, lr: float) -> tuple[float, float]:
        """Forward, loss, backward and the optimizer step on `ids` (`step`: 1-based, `lr`: for messages); the loss and gradient norm."""
        if self.in_backward is None:
            return self._train_step(ids, step, lr)
        with self.in_backward.step_scope():
            return self._train_step(ids, step, lr)

    def _train_step(self, ids: torch.Tensor, step: int, lr: float) -> tuple[float, float]:
        with autocast(self.device, self.config.autocast_dtype):
            loss = next_token_loss(self.model, ids)  # chunked: the full logits never exist
        value = loss.item() if self.info is None else all_reduce_mean(loss.item(), self.info)  # every rank sees a NaN
        if not math.isfinite(value):
            raise TrainingDiverged(f"the loss is {value} at step {step} (lr {lr:.3g}); the run stopped, no results were written")
        if self.in_backward is not None:
            return value, self._step_in_backward(loss, step, lr)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip or math.inf))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif not math.isfinite(norm):
            raise TrainingDiverged(f"the gradient norm is {norm} at step {step} (lr {lr:.3g}); the run stopped, no results were written")
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value, norm if math.isfinite(norm) else -1.0

    def _step_in_backward(self, loss: torch.Tensor, step: int, lr: float) -> float:
        """The backward that steps each parameter as its gradient arrives; the gradient norm (never clipped)."""
        norm = self.in_backward.backward(loss)
        if not math.isfinite(norm):
            raise TrainingDiverged(
                f"the gradient norm is {norm} at step {step} (lr {lr:.3g}; the parameters were stepped during the backward); "
                "the run stopped, no results were written"
            )
        return norm

    def scaler_state(self) -> dict | None:
        """The gradient scaler's state for a checkpoint (None without one)."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_scaler_state(self, state: dict | None) -> None:
        """Restore `scaler_state()`'s form; a run without a scaler, or an empty state, leaves nothing to restore."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def adamw(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases and norm weights, the 1-D parameters, are not decayed)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    decayed = [p for p in trainable if p.ndim >= 2]
    plain = [p for p in trainable if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.adam_eps)
