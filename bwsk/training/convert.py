"""`make_reversible`: a Hugging Face causal LM whose layer stack runs as reversible coupling blocks.

    model = make_reversible(model)              # a converted copy (inplace=True converts `model` itself)
    loss = model(input_ids, labels=input_ids).loss
    loss.backward()                             # activations of the layer stack: one stream pair per segment
    with plain_autograd(model): ...             # the same function with ordinary autograd (the reference)
    reversible_runtime(model).report            # function gap, blocks, segments, sub-blocks of F and G
    set_kernels(model.cuda(), "auto")           # the seam arithmetic: Triton on CUDA (fused norms), torch elsewhere

F and G of every layer come from the `couple` pass on the model's IR (see
`bwsk.training.discover`): the attention half (norm + attention [+ dropout]) and
the MLP half, sequential or parallel residual alike. The converted model is the
same nn.Module (same class, parameters, state-dict keys, HF forward signature):
the model's own code computes embeddings, attention mask and rotary embeddings;
its first layer's forward is replaced by the whole reversible stack and the
other layers' forwards pass the hidden state through. Both streams start as the
embedding output h0; the final norm reads y1 + y2 - h0 (see `bwsk.training.stack`).

A converted model computes a different function from the original (no exact
reversible rewrite of a residual layer exists): the conversion reports the gap
(relative change of the logits on a fixed tiny input); the model is fine-tuned
to recover it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bwsk.training.coupling import CouplingBlock, Half
from bwsk.training.discover import LayerHalves, bind_layer_call, discover, example_ids
from bwsk.training.drift import DriftMonitor
from bwsk.training.errors import ConversionError
from bwsk.training.seam import seam_for
from bwsk.training.stack import ReversibleStack

COMBINATION = "y1 + y2 - h0"
RUNTIME_ATTRIBUTE = "bwsk_reversible"


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion did: the layers and their F/G sub-modules, and how far the function moved."""

    model: str
    container: str
    layers: tuple[LayerHalves, ...]
    combination: str
    function_gap: float | None  # |logits_converted - logits_original| / |logits_original| on a fixed input (None on meta)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({layer.kind for layer in self.layers}))


@dataclass
class ReversibleRuntime:
    """The state a converted model carries (attribute `bwsk_reversible`, not a submodule: the state dict is unchanged)."""

    stack: ReversibleStack
    report: ConversionReport

    @property
    def kernels(self) -> str:
        """The seam arithmetic the blocks run now: "torch" or "triton" (see `set_kernels`)."""
        return self.stack.blocks[0].seam.name if self.stack.blocks else "torch"

    @property
    def fused_norms(self) -> int:
        """Halves whose leading norm the seam computes now (Triton seams; none under FSDP2; see `bwsk.training.seam_norm`)."""
        return sum(half.lead is not None for block in self.stack.blocks for half in (block.f, block.g))

    @property
    def last_drift(self):
        """The latest rebuild-error report of the drift monitor (None without a monitor or before a measured step)."""
        return None if self.stack.monitor is None else self.stack.monitor.last


class StackEntry:
    """The forward of the container's first layer: binds the layer call and runs the whole stack."""

    def __init__(self, layer: nn.Module, stack: ReversibleStack):
        self.layer, self.stack = layer, stack

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden, side = bind_layer_call(self.layer, args, kwargs)
        return self.stack(hidden, side)


class PassThrough:
    """The forward of the other layers: the stack already ran them, so the hidden state passes unchanged."""

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden, _ = bind_layer_call(self.layer, args, kwargs)
        return hidden


def make_reversible(
    model: nn.Module,
    *,
    inplace: bool = False,
    kernels: str = "auto",
    anchors: int | Sequence[int] | None = None,
    drift: DriftMonitor | None = None,
    measure_gap: bool = True,
    layout: tuple[str, Sequence[LayerHalves]] | None = None,
) -> nn.Module:
    """The model with its layer stack as reversible coupling blocks (a copy unless `inplace`).

    `kernels`: "torch", "triton" (bwsk's fused seam kernels: each stream update also computes the norm the next half
    starts with, when that norm is a LayerNorm or RMSNorm), "auto" (the default: Triton on CUDA, torch elsewhere) for the seam
    arithmetic (`set_kernels` switches it later); `anchors`: store the
    stream pair every k blocks (int) or before the given block indices;
    `drift`: a `DriftMonitor` measuring the rebuild error (and, with its
    tolerance, re-planning anchors and recompute fallbacks). Raises
    `ConversionError` (one line) for what cannot be rebuilt. `layout`: (container, halves of
    each layer) from an earlier conversion's report, used instead of discovering them (a
    saved reversible model is rebuilt with exactly the coupling it was trained with).
    """
    if hasattr(model, RUNTIME_ATTRIBUTE):
        raise ConversionError(f"{type(model).__name__} is already reversible")
    seam = seam_for(kernels, next(model.parameters()).device)
    container, layers = discover(model) if layout is None else (layout[0], list(layout[1]))
    reference = _logits(model) if measure_gap else None
    target = model if inplace else copy.deepcopy(model)
    fuse = seam.fuses_norms
    blocks = [
        CouplingBlock(i, halves.layer, Half(target, halves.f, fuse_norm=fuse), Half(target, halves.g, fuse_norm=fuse), seam)
        for i, halves in enumerate(layers)
    ]
    stack = ReversibleStack(blocks, anchors=anchors, monitor=drift)
    modules = target.get_submodule(container)
    for i, layer in enumerate(modules):
        layer.forward = StackEntry(layer, stack) if i == 0 else PassThrough(layer)
    gap = None if reference is None else _relative_change(_logits(target), reference)
    report = ConversionReport(type(model).__name__, container, tuple(layers), COMBINATION, gap)
    setattr(target, RUNTIME_ATTRIBUTE, ReversibleRuntime(stack, report))
    return target


def set_kernels(model: nn.Module, kernels: str) -> None:
    """Switch a converted model's seams to `kernels` ("auto" decides by the model's device now) in place.

    Weights, coupling layout, segments and drift monitor are kept; the function is the same up to
    rounding. A model converted (or loaded) on the CPU and moved to CUDA gets Triton seams this way.
    """
    stack = reversible_runtime(model).stack
    seam = seam_for(kernels, next(model.parameters()).device)
    for block in stack.blocks:
        block.seam = seam
        for half in (block.f, block.g):
            half.fuse(seam.fuses_norms)


def reversible_runtime(model: nn.Module) -> ReversibleRuntime:
    """The runtime of a model converted by `make_reversible` (ConversionError for any other model)."""
    runtime = getattr(model, RUNTIME_ATTRIBUTE, None)
    if not isinstance(runtime, ReversibleRuntime):
        raise ConversionError(f"{type(model).__name__} was not converted by make_reversible")
    return runtime


@contextmanager
def plain_autograd(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the converted `model` runs its same blocks with ordinary autograd, storing every activation."""
    stack = reversible_runtime(model).stack
    previous, stack.plain = stack.plain, True
    try:
        yield model
    finally:
        stack.plain = previous


def _logits(model: nn.Module) -> torch.Tensor | None:
    """Logits on a fixed tiny input in eval mode without grad (None for a meta-device model)."""
    parameter = next(model.parameters())
    if parameter.device.type == "meta":
        return None
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(example_ids(model, parameter.device)).logits.float()
    finally:
        model.train(training)


def _relative_change(new: torch.Tensor | None, old: torch.Tensor | None) -> float | None:
    if new is None or old is None:
        return None
    return float((new - old).norm() / old.norm().clamp_min(torch.finfo(torch.float32).tiny))
