"""`make_reversible`: a Hugging Face causal LM whose layer stack runs as reversible coupling blocks.

    model = make_reversible(model)              # a converted copy (inplace=True converts `model` itself)
    loss = model(input_ids, labels=input_ids).loss
    loss.backward()                             # activations of the layer stack: one stream pair per segment
    with plain_autograd(model): ...             # the same function with ordinary autograd (the reference)
    model.save_pretrained(folder)               # the `bwsk_reversible` type (see `bwsk.training.reversible.huggingface`)
    reversible_runtime(model).report            # function gap, blocks, segments, sub-blocks of F and G
    set_kernels(model.cuda(), "auto")           # the seam arithmetic: Triton on CUDA (fused norms), torch elsewhere

F and G of every layer come from the `couple` pass on the model's IR (see
`bwsk.training.reversible.discover`): the attention half (norm + attention [+ dropout]) and
the MLP half, sequential or parallel residual alike (on a parallel residual F is
the half the model's code adds first: GPT-NeoX's MLP). The converted model is the
same nn.Module (same class, parameters, state-dict keys, HF forward signature):
the model's own code computes embeddings, attention masks and rotary embeddings.
Every layer's forward records the side inputs it is called with (its own mask,
sliding window, rotary embedding, ...) and passes the hidden state through; the
last layer's call runs the whole reversible stack, each block with its own
layer's side inputs. Both streams start as the embedding output h0; the final
norm reads y1 + y2 - h0 (see `bwsk.training.reversible.stack`). A forward with gradients
runs without a KV cache (`bwsk.training.kv_cache`); inference and `generate`
keep the user's cache setting.

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
from torch._subclasses.fake_tensor import is_fake
from transformers import PreTrainedModel

from bwsk.training.kv_cache import cache_off_while_training
from bwsk.training.language_model import evaluating
from bwsk.training.reversible.coupling import CouplingBlock, Half
from bwsk.training.reversible.discover import LayerHalves, bind_layer_call, discover, example_ids
from bwsk.training.reversible.drift import DriftMonitor
from bwsk.training.reversible.errors import ConversionError
from bwsk.training.reversible.seams import seam_for
from bwsk.training.reversible.stack import ReversibleStack

COMBINATION = "y1 + y2 - h0"
RUNTIME_ATTRIBUTE = "bwsk_reversible"


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion did: the layers and their F/G sub-modules, and how far the function moved."""

    model: str
    container: str
    layers: tuple[LayerHalves, ...]
    combination: str
    function_gap: float | None  # |logits_converted - logits_original| / |logits_original| on a fixed input (None: not measured)
    weightless: bool = False  # meta or fake tensors (a FakeTensorMode): no gap measured, no anchors calibrated

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
        """Halves whose leading norm the seam computes now (Triton seams; none under FSDP2; see `bwsk.training.reversible.seams`)."""
        return sum(half.lead is not None for block in self.stack.blocks for half in (block.f, block.g))

    def summary(self) -> dict[str, Any]:
        """What a run reports of its conversion: the function gap, the stream combination, the seams and their fused norms."""
        gap, combination = self.report.function_gap, self.report.combination
        return {"function_gap": gap, "combination": combination, "kernels": self.kernels, "fused_norms": self.fused_norms}

    @property
    def last_drift(self):
        """The latest rebuild-error report of the drift monitor (None without a monitor or before a measured step)."""
        return None if self.stack.monitor is None else self.stack.monitor.last


class StackRun:
    """One forward through the layer container: every layer's side inputs, in order; the last layer's call runs the stack.

    Invariant: the model calls layer 0, 1, ..., n-1 in order, each on the hidden state layer 0 received (the
    layers before the last return it unchanged); anything else is refused in one line naming the layer.
    """

    def __init__(self, stack: ReversibleStack, layers: Sequence[LayerHalves]):
        self.stack, self.layers = stack, tuple(layers)
        self.paths = tuple(layer.layer for layer in self.layers)
        self.hidden: torch.Tensor | None = None
        self.sides: list[dict[str, Any]] = []

    def enter(self, index: int, hidden: torch.Tensor, side: dict[str, Any]) -> torch.Tensor | tuple:
        """Record layer `index`'s call; the last layer's returns the stack's output, the others `hidden` itself (as the
        tuple's first element for a layer that returns a tuple; the rest None)."""
        if index == 0:
            self.hidden, self.sides = hidden, []
        problem = self._problem(index, hidden, side)
        if problem is not None:
            self.hidden, self.sides = None, []
            raise ConversionError(f"cannot run {self.paths[index]} in the reversible stack: {problem}")
        self.sides.append(side)
        out = hidden
        if index == len(self.paths) - 1:
            first, sides = self.hidden, self.sides
            self.hidden, self.sides = None, []
            out = self.stack(first, sides)
        length = self.layers[index].outputs
        return out if length is None else (out, *([None] * (length - 1)))

    def _problem(self, index: int, hidden: torch.Tensor, side: dict[str, Any]) -> str | None:
        if index != len(self.sides) or self.hidden is None:
            expected = self.paths[len(self.sides)] if self.hidden is not None else self.paths[0]
            return f"it was called before {expected} (the stack runs the layers in order, when the last one is called)"
        if hidden is not self.hidden:
            return (
                f"its hidden state is not the one {self.paths[0]} received (the model changes it between layers, "
                "which a stack running at the last layer cannot see)"
            )
        shared = next((name for name, value in side.items() if value is hidden), None)
        if shared is not None:
            return f"its side input {shared!r} is the hidden state itself, which only the stack computes"
        return None


class LayerEntry:
    """The forward of layer `index` of the container: binds the call and hands it to the `StackRun`."""

    def __init__(self, layer: nn.Module, index: int, run: StackRun):
        self.layer, self.index, self.run = layer, index, run

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden, side = bind_layer_call(self.layer, args, kwargs)
        return self.run.enter(self.index, hidden, side)


class SaveAsReversible:
    """A converted Hugging Face model's `save_pretrained`: writes the `bwsk_reversible` type, never the base architecture
    (which would reload as a plain model computing another function)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        from bwsk.training.reversible.huggingface import as_pretrained

        wrapper = as_pretrained(self.model)
        state = kwargs.get("state_dict")
        if state is not None:  # the wrapper holds the model under its base prefix
            kwargs["state_dict"] = {f"{wrapper.base_model_prefix}.{name}": tensor for name, tensor in state.items()}
        return wrapper.save_pretrained(save_directory, *args, **kwargs)


def make_reversible(
    model: nn.Module,
    *,
    inplace: bool = False,
    kernels: str = "auto",
    anchors: int | Sequence[int] | None = None,
    drift: DriftMonitor | bool = True,
    measure_gap: bool = True,
    layout: tuple[str, Sequence[LayerHalves]] | None = None,
) -> nn.Module:
    """The model with its layer stack as reversible coupling blocks (a copy unless `inplace`).

    `kernels`: "torch", "triton" (bwsk's fused seam kernels: each stream update also computes the norm the next half
    starts with, when that norm is a LayerNorm or RMSNorm), "auto" (the default: Triton on CUDA, torch elsewhere) for the seam
    arithmetic (`set_kernels` switches it later); `anchors`: store the
    stream pair every k blocks (int) or before the given block indices;
    `drift`: a `DriftMonitor` measuring the rebuild error (and, with its
    tolerance, re-planning anchors and recompute fallbacks); True (the default) for
    `DriftMonitor()` (a sampled check every 100 steps, tolerance 1e-4), False for none.
    Without `anchors`, anchors are placed by measurement here (`ReversibleStack.calibrate`). A weightless model
    (meta device, or fake tensors of a FakeTensorMode, for measuring memory) is converted without either
    measurement: its segments are the `anchors` given, and the report says `weightless`. Raises
    `ConversionError` (one line) for what cannot be rebuilt. `layout`: (container, halves of
    each layer) from an earlier conversion's report, used instead of discovering them (a
    saved reversible model is rebuilt with exactly the coupling it was trained with).
    """
    from bwsk.training.reversible.huggingface import register

    if hasattr(model, RUNTIME_ATTRIBUTE):
        raise ConversionError(f"{type(model).__name__} is already reversible")
    register()  # what this model saves loads back with the Auto classes in this process
    seam = seam_for(kernels, next(model.parameters()).device)
    container, layers = discover(model) if layout is None else (layout[0], list(layout[1]))
    weightless = _weightless(model)
    reference = _logits(model) if measure_gap and not weightless else None
    target = model if inplace else copy.deepcopy(model)
    fuse = seam.fuses_norms
    blocks = [
        CouplingBlock(i, halves.layer, Half(target, halves.f, fuse_norm=fuse), Half(target, halves.g, fuse_norm=fuse), seam)
        for i, halves in enumerate(layers)
    ]
    stack = ReversibleStack(blocks, anchors=anchors, monitor=DriftMonitor() if drift is True else drift or None)
    run = StackRun(stack, layers)
    for i, layer in enumerate(target.get_submodule(container)):
        layer.forward = LayerEntry(layer, i, run)
    cache_off_while_training(target)
    if anchors is None and not weightless:
        device = next(target.parameters()).device
        with torch.enable_grad():  # a model converted under no_grad is calibrated all the same
            stack.calibrate(lambda: target(example_ids(target, device)).logits)
    if isinstance(target, PreTrainedModel):
        target.save_pretrained = SaveAsReversible(target)
    gap = None if reference is None else _relative_change(_logits(target), reference)
    report = ConversionReport(type(model).__name__, container, tuple(layers), COMBINATION, gap, weightless)
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


def _weightless(model: nn.Module) -> bool:
    """Whether `model`'s parameters hold no values: on the meta device, or fake tensors (of a FakeTensorMode)."""
    parameter = next(model.parameters())
    return parameter.device.type == "meta" or is_fake(parameter)


def _logits(model: nn.Module) -> torch.Tensor:
    """Logits on a fixed tiny input in eval mode without grad."""
    parameter = next(model.parameters())
    with evaluating(model):
        return model(example_ids(model, parameter.device)).logits.float()


def _relative_change(new: torch.Tensor | None, old: torch.Tensor | None) -> float | None:
    if new is None or old is None:
        return None
    return float((new - old).norm() / old.norm().clamp_min(torch.finfo(torch.float32).tiny))
