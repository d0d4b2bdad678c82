"""One training step of a full-size causal LM measured exactly without weights: a FakeTensorMode step under MemTracker.

    step = measure_step(config, "reversible", batch=1, seq=4096, dtype=torch.bfloat16)   # chunked loss by default
    step.peak_bytes, step.peak_by_category, step.flops
    measure_step(config, "reversible", batch=1, seq=4096, optimizer_in_backward=OptimizerInBackward)  # AdamW in backward

The model (`AutoModelForCausalLM.from_config(config)`: transformers' defaults, sdpa attention), its training mode
(`apply_mode`), AdamW and the input ids are made inside a `torch._subclasses.fake_tensor.FakeTensorMode`: every
tensor has a shape, dtype, device and storage size but no values, so no weight is allocated and nothing is
computed, while autograd, autocast, checkpointing and the reversible Function run as they would. MemTracker
counts storages per category (parameters, buffers, gradients, activations, temporaries, optimizer state) as it
does in the same step run for real (`fake=False`, the reference; the tests compare both to the byte).

The loss is `next_token_loss` (`chunked`: the LM head's loss a chunk of tokens at a time; else the full logits).
Two steps run: the first creates AdamW's state and its FLOPs are counted (`FlopCounterMode`: matrix products and
attention, forward, backward and every recompute); gradients are then freed (`zero_grad`), and the second step, a
step of a running training, is the one measured (its own peak, and the categories at that peak). A reversible
model converted from fake tensors keeps the segments it was given (no anchor calibration, no function gap: both
need values), and its first step's drift probe measures nothing; `notes` says so.

With `optimizer_in_backward` (the trainer's `OptimizerInBackward`, passed in: the modes sit below the trainer) the
optimizer steps inside the backward (each parameter, or reversible block during the rebuild, stepped and its
gradient freed as soon as it is final; no gradient clipping, as in the trainer), so gradients never all coexist.
Its global gradient norm is a value, which a fake step does not have: the one `float` of it, after the backward
and every parameter's step, is skipped there (it allocates nothing).

The tracker counts the step's global peak only (`PeakTracker`): MemTracker's per-module peaks, which it
updates on every operation for every module, cost most of a full-size fake step's time and are not reported.

Transformers takes a fake tensor for a trace and skips the value checks it makes on real inputs; one of them decides
the bytes: without a KV cache (the checkpoint, analyzed and reversible modes) it checks the position ids for packed
sequences and, finding none, lets sdpa run causal without a mask. Fake positions would get a (batch, 1, seq, seq)
mask that the real step never builds (and save it in every layer's attention), so the fake step answers that check
as the real one does for its input (the positions the model makes itself: one sequence per row). The check's own few
batch x seq integer temporaries, at the start of the forward, are the only bytes a real step has and a fake one not.

The fake device is the cpu: this torch can make fake CUDA tensors without a GPU, but not run a step on them
(autocast on cuda disables itself without CUDA, and kernels that consult the device abort), so CPU autocast and
the CPU attention kernels decide the bytes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode, is_fake

from bwsk.training.language_model import autocast, next_token_loss
from bwsk.training.modes import DEFAULT_BUDGET
from bwsk.training.modes.apply import apply_mode, is_reversible
from bwsk.training.modes.flops import counting_flops
from bwsk.training.modes.peak_tracker import PeakTracker
from bwsk.training.modes.recording import unpacked_positions

CATEGORIES = ("Parameter", "Buffer", "Gradient", "Activation", "Temp", "Optstate", "Other")
WEIGHTLESS_REVERSIBLE = "reversible: no anchor calibration and no function gap (fake tensors have no values); segments as given"


class InBackward(Protocol):
    """What `measure_step` needs of `bwsk.training.trainer.optimizer_in_backward.OptimizerInBackward`."""

    def step_scope(self) -> contextlib.AbstractContextManager: ...

    def backward(self, loss: torch.Tensor) -> float: ...


@dataclass(frozen=True)
class StepRecord:
    """The measured (second) step: its peak, the categories at that peak (`CATEGORIES`, bytes), FLOPs of one step."""

    model: str
    mode: str
    batch: int
    seq: int
    dtype: str
    loss: str  # "chunked" or "full"
    optimizer: str  # "AdamW", or "AdamW in backward" (stepped per parameter inside the backward)
    device: str
    fake: bool
    peak_bytes: int
    peak_by_category: dict[str, int]
    flops: int
    seconds: float
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "notes": list(self.notes)}


def measure_step(
    config: Any,
    mode: str,
    *,
    batch: int,
    seq: int,
    dtype: torch.dtype | None = None,
    chunked: bool = True,
    fake: bool = True,
    seed: int = 0,
    budget: float = DEFAULT_BUDGET,
    kernels: str = "auto",
    name: str | None = None,
    optimizer_in_backward: Callable[[nn.Module, torch.optim.Optimizer], InBackward] | None = None,
) -> StepRecord:
    """Build a `config` model in `mode` (fake tensors unless `fake=False`), run two training steps, measure the second.

    `dtype`: autocast precision (None: the model's own). The analyzed mode plans on the measured input shape.
    `optimizer_in_backward`: `OptimizerInBackward` to step AdamW inside the backward (None: `optimizer.step()` after it).
    """
    start = time.perf_counter()
    values, positions = (FakeTensorMode(), unpacked_positions()) if fake else (contextlib.nullcontext(), contextlib.nullcontext())
    with torch.random.fork_rng(devices=[]), values, positions:
        torch.manual_seed(seed)
        model = _build(config)
        ids = torch.randint(config.vocab_size, (batch, seq))
        model = apply_mode(model, mode, budget=budget, example_input=(ids,), dtype=dtype, kernels=kernels)
        optimizer = torch.optim.AdamW(model.parameters())
        in_backward = None if optimizer_in_backward is None else optimizer_in_backward(model, optimizer)
        tracker = PeakTracker()
        tracker.track_external(model, optimizer, ids)
        counter = counting_flops()
        with tracker, counter:
            _train_step(model, optimizer, in_backward, ids, dtype, chunked)
        optimizer.zero_grad(set_to_none=True)
        tracker.reset_mod_stats()
        with tracker:  # entering again starts a new peak from what is alive now
            _train_step(model, optimizer, in_backward, ids, dtype, chunked)
        peak = tracker.categories("peak", "cpu")
    weightless = fake and is_reversible(model)
    return StepRecord(
        name or config.model_type,
        mode,
        batch,
        seq,
        "fp32" if dtype is None else str(dtype).removeprefix("torch."),
        "chunked" if chunked else "full",
        "AdamW" if in_backward is None else "AdamW in backward",
        "cpu",
        fake,
        peak.get("Total", 0),
        {category: peak.get(category, 0) for category in CATEGORIES},
        counter.get_total_flops(),
        time.perf_counter() - start,
        (WEIGHTLESS_REVERSIBLE,) if weightless else (),
    )


def _build(config: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config).train()


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    in_backward: InBackward | None,
    ids: torch.Tensor,
    dtype: torch.dtype | None,
    chunked: bool,
) -> None:
    if in_backward is None:
        with autocast(ids.device, dtype):
            loss = next_token_loss(model, ids, chunked=chunked)
        loss.backward()
        optimizer.step()
        return
    with in_backward.step_scope():
        with autocast(ids.device, dtype):
            loss = next_token_loss(model, ids, chunked=chunked)
        try:
            in_backward.backward(loss)
        except DataDependentOutputException:  # the norm's float(), once every parameter is stepped: fake tensors have no value
            if not is_fake(loss) or any(p.grad is not None for p in model.parameters()):
                raise
