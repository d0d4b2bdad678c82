"""Measuring one real training step: peak memory by category, activation bytes after forward, time, gradients.

Memory is counted by `torch.distributed._tools.mem_tracker.MemTracker` (storage
bytes, exact and repeatable on the CPU; categories parameters, buffers, gradients,
activations, temporaries, optimizer state); on CUDA the step's peak is the
allocator's (`torch.cuda.max_memory_allocated`). Every measurement uses a fresh
tracker (a reused one would need `reset_mod_stats`).

Activation bytes after forward: the storages a forward creates that are still
alive once the caller has dropped the output but kept its autograd graph, i.e.
what the graph holds for backward (saved tensors, checkpoint inputs, anything a
custom Function keeps). The model inputs are cloned inside the tracker first, so
they count when, and only when, the graph keeps them. A reversible model's drift
monitor is paused for that forward: the step measured is one it does not probe
(a probed step, one in `DriftMonitor.every`, also keeps a few sampled rows of the
probed blocks' input pairs; `benchmarks/memory.py --drift` reports them).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from bwsk.training.language_model import autocast, logits_of, next_token_loss
from bwsk.training.modes.peak_tracker import PeakTracker

ACTIVATIONS = "Activation"


@dataclass(frozen=True)
class StepMemory:
    """One training step's peak (`source`: who counted it), the tracker's categories at its peak, the loss."""

    peak_bytes: int
    peak_by_category: dict[str, int]
    source: str
    loss: float


@contextlib.contextmanager
def drift_paused(model: nn.Module) -> Iterator[None]:
    """While active, a reversible model's drift monitor (if any) neither probes nor counts steps."""
    from bwsk.training.reversible.convert import RUNTIME_ATTRIBUTE

    stack = getattr(getattr(model, RUNTIME_ATTRIBUTE, None), "stack", None)
    monitor = getattr(stack, "monitor", None)
    if monitor is None:
        yield
        return
    stack.monitor = None
    try:
        yield
    finally:
        stack.monitor = monitor


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def activation_bytes(model: nn.Module, input_ids: torch.Tensor, *, dtype: torch.dtype | None = None) -> int:
    """Bytes the forward's autograd graph keeps for backward (see the module docstring); no backward is run."""
    device = _device(model)
    if device.type == "cuda":
        return _cuda_activation_bytes(model, input_ids, dtype)
    tracker = PeakTracker()
    tracker.track_external(model, input_ids)
    with tracker, drift_paused(model):
        ids = input_ids.clone()
        with autocast(device, dtype):
            logits = logits_of(model(ids))
        graph = logits.grad_fn
        del logits, ids
        kept = tracker.categories("current", device.type).get(ACTIVATIONS, 0)
    del graph
    return kept


def _cuda_activation_bytes(model: nn.Module, input_ids: torch.Tensor, dtype: torch.dtype | None) -> int:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    ids = input_ids.clone()
    with autocast(ids.device, dtype), drift_paused(model):
        logits = logits_of(model(ids))
    graph = logits.grad_fn
    del logits, ids
    torch.cuda.synchronize()
    kept = torch.cuda.memory_allocated() - before
    del graph
    return kept


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, input_ids: torch.Tensor, dtype: torch.dtype | None, *, full_logits: bool = False
) -> torch.Tensor:
    """Forward, next-token loss (chunked unless `full_logits`: see `next_token_loss`), backward, optimizer step;
    gradients are left in place. Returns the loss."""
    with autocast(input_ids.device, dtype):
        loss = next_token_loss(model, input_ids, chunked=not full_logits)
    loss.backward()
    optimizer.step()
    return loss.detach()


def step_memory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    input_ids: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    full_logits: bool = False,
) -> StepMemory:
    """One real `train_step` under a fresh MemTracker (and, on CUDA, the allocator's peak counter)."""
    device = input_ids.device
    tracker = PeakTracker()
    tracker.track_external(model, optimizer, input_ids)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with tracker:
        loss = train_step(model, optimizer, input_ids, dtype, full_logits=full_logits)
    categories = tracker.categories("peak", device.type)
    if device.type == "cuda":
        torch.cuda.synchronize()
        return StepMemory(torch.cuda.max_memory_allocated(), categories, "CUDA allocator", loss.item())
    return StepMemory(categories.get("Total", 0), categories, "MemTracker", loss.item())


def step_seconds(step: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of `step` (CUDA work included)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters' gradients by name (parameters without a gradient are left out)."""
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def loss_gradients(
    model: nn.Module, input_ids: torch.Tensor, *, dtype: torch.dtype | None = None, full_logits: bool = False
) -> dict[str, torch.Tensor]:
    """The next-token loss's gradients (chunked unless `full_logits`) with respect to every parameter (the model's .grad is left untouched)."""
    params = dict(model.named_parameters())
    with autocast(input_ids.device, dtype):
        loss = next_token_loss(model, input_ids, chunked=not full_logits)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: g.detach() for name, g in zip(params, grads) if g is not None}


def max_grad_difference(got: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """Largest |got - reference| over every parameter, relative to the largest |reference| of that parameter.

    A parameter with a gradient on one side only is an infinite difference.
    """
    if set(got) != set(reference):
        return float("inf")
    worst = 0.0
    for name, expected in reference.items():
        scale = expected.abs().max().item() or 1.0
        worst = max(worst, (got[name].double() - expected.double()).abs().max().item() / scale)
    return worst
