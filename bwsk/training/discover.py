"""Which sub-modules of each layer form its F and G: the `couple` pass's answer, checked on one traced forward.

The couple pass (on the model's IR) names, per layer, the direct sub-modules
each half calls (`Coupling.f_modules`, `g_modules`). The IR drops the module of
parameterless calls (a dropout module inlines to `aten.dropout`), and a half is
called with side inputs, so one forward of a meta-device twin is traced with
hooks on every layer's direct children. From the trace:
- each half becomes a chain: every member's input is the previous step's output;
  a parameterless child that consumes the chain's output (a dropout) joins it;
- each step records the keyword side inputs its layer passed it, which must be
  the layer's own arguments, passed on unchanged;
- a child with parameters that the layer calls outside both halves is refused.
Nothing here is a table of module names: only the IR and the trace decide.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bwsk.training.coupling import Step
from bwsk.training.errors import ConversionError


@dataclass(frozen=True)
class LayerHalves:
    """One layer's coupling: its module path, the couple pass's kind, and the steps of F and G."""

    layer: str
    kind: str
    f: tuple[Step, ...]
    g: tuple[Step, ...]


@dataclass
class ChildCall:
    """One call of a layer's direct child during the trace."""

    path: str
    input: torch.Tensor
    output: torch.Tensor
    keywords: dict[str, Any]


@dataclass
class LayerCall:
    """One call of a layer: its bound arguments and its children's calls, in order."""

    arguments: dict[str, Any]
    children: list[ChildCall]


def meta_twin(model: nn.Module, layers: int | None = None) -> nn.Module:
    """A weightless copy of a transformers model (same class and config, meta device, eval mode), with `layers` layers if given.

    Any other module is returned as it is.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return model
    config = copy.deepcopy(model.config)
    if layers is not None:
        config.num_hidden_layers = layers
    with torch.device("meta"):
        twin = type(model)(config)
    return twin.eval()


def example_ids(model: nn.Module, device: torch.device | str, tokens: int = 8) -> torch.Tensor:
    """A fixed tiny input (token ids 0, 1, ... modulo the vocabulary), shape (1, tokens)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 2
    return (torch.arange(tokens) % vocab).unsqueeze(0).to(device)


def bind_layer_call(layer: nn.Module, args: tuple, kwargs: dict) -> tuple[Any, dict[str, Any]]:
    """(hidden state, side inputs by name) of a layer call: arguments bound to its forward, `**kwargs` flattened."""
    import inspect

    signature = inspect.signature(type(layer).forward)
    bound = signature.bind(layer, *args, **kwargs)
    names = list(signature.parameters)
    arguments: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        elif name != names[0]:
            arguments[name] = value
    hidden_name = names[1]
    return arguments.pop(hidden_name), arguments


@contextmanager
def traced(model: nn.Module, layers: list[str]) -> Iterator[dict[str, LayerCall]]:
    """Record, while active, each layer's first call and its direct children's calls."""
    records: dict[str, LayerCall] = {}
    handles = []

    def on_layer(path: str):
        def hook(module, args, kwargs):
            if path not in records:
                _, side = bind_layer_call(module, args, kwargs)
                records[path] = LayerCall(side, [])

        return hook

    def on_child(layer: str, path: str):
        def hook(module, args, kwargs, output):
            record = records.get(layer)
            if record is None or any(c.path == path for c in record.children):
                return
            if len(args) > 1:
                raise ConversionError(f"cannot make {layer} reversible: it passes positional side inputs to {path}")
            keywords = dict(kwargs)
            first = args[0] if args else keywords.pop(next(iter(keywords)))
            out = output[0] if isinstance(output, tuple) else output
            record.children.append(ChildCall(path, first, out, keywords))

        return hook

    for layer in layers:
        module = model.get_submodule(layer)
        handles.append(module.register_forward_pre_hook(on_layer(layer), with_kwargs=True))
        for name, child in module.named_children():
            handles.append(child.register_forward_hook(on_child(layer, f"{layer}.{name}"), with_kwargs=True))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def _chain(layer: str, members: tuple[str, ...], other: tuple[str, ...], call: LayerCall, model: nn.Module, half: str) -> tuple[Step, ...]:
    """The half's steps in call order: members linked output -> input, plus parameterless children consuming the chain."""
    calls = call.children
    by_path = {c.path: c for c in calls}
    missing = [m for m in members if m not in by_path]
    if missing:
        raise ConversionError(f"cannot make {layer} reversible: {half} calls {missing[0]}, which did not run in the traced forward")
    outputs = {id(c.output) for c in calls if c.path in members}
    starts = [c for c in calls if c.path in members and id(c.input) not in outputs]
    if len(starts) != 1:
        raise ConversionError(f"cannot make {layer} reversible: {half} ({', '.join(members)}) is not one chain of sub-modules")
    chain = [starts[0]]
    while True:
        last = chain[-1]
        after = calls[calls.index(last) + 1 :]
        consumers = [c for c in after if c.input is last.output and c not in chain]
        member = [c for c in consumers if c.path in members]
        free = [c for c in consumers if c.path not in members and c.path not in other and _parameterless(model.get_submodule(c.path))]
        if member:
            chain.append(member[0])
        elif len(consumers) == 1 and free:
            chain.append(free[0])
        else:
            break
    unreached = [m for m in members if m not in {c.path for c in chain}]
    if unreached:
        raise ConversionError(
            f"cannot make {layer} reversible: in {half}, {unreached[0]} does not read the output of the sub-module before it"
        )
    return tuple(Step(c.path, _keywords(layer, c, call.arguments)) for c in chain)


def _keywords(layer: str, child: ChildCall, arguments: dict[str, Any]) -> tuple[str, ...]:
    for name, value in child.keywords.items():
        if name not in arguments or (isinstance(value, torch.Tensor) and value is not arguments[name]):
            raise ConversionError(
                f"cannot make {layer} reversible: it passes {child.path} a side input {name!r} that is not its own argument"
            )
    return tuple(child.keywords)


def _parameterless(module: nn.Module) -> bool:
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None


def layer_halves(model: nn.Module, couplings: list, call_records: dict[str, LayerCall]) -> list[LayerHalves]:
    """F and G steps of every coupled layer; refuses layers that call parameterised sub-modules outside both halves."""
    found = []
    for coupling in couplings:
        record = call_records.get(coupling.layer)
        if record is None:
            raise ConversionError(f"cannot make {coupling.layer} reversible: the layer did not run in the traced forward")
        f = _chain(coupling.layer, coupling.f_modules, coupling.g_modules, record, model, "F")
        g = _chain(coupling.layer, coupling.g_modules, coupling.f_modules, record, model, "G")
        used = {s.path for s in (*f, *g)}
        for child in record.children:
            if child.path not in used and not _parameterless(model.get_submodule(child.path)):
                raise ConversionError(f"cannot make {coupling.layer} reversible: it calls {child.path} outside F and G")
        found.append(LayerHalves(coupling.layer, coupling.kind, f, g))
    return found


def _couplings(model: nn.Module, tokens: int) -> list:
    """The couple pass's result on the IR of a one-layer meta twin, its coupling repeated for every layer of the full model.

    Layers of one stack share their class and sub-module names (checked), so one layer's F and G name every layer's;
    a model whose layers differ is exported in full.
    """
    import bwsk

    def couple(twin: nn.Module) -> list:
        program = bwsk.lower_module(twin, (example_ids(twin, "meta", tokens),), level="training")
        return bwsk.analyze(program, passes=["couple"]).result("couple")

    short = meta_twin(model, layers=1) if hasattr(model, "config") else model
    found = couple(short)
    if len(found) != 1 or short is model:
        return found
    template = found[0]
    container, _, index = template.layer.rpartition(".")
    try:
        layers = model.get_submodule(container)
    except AttributeError:
        return couple(meta_twin(model))
    first = short.get_submodule(template.layer)
    names = [n for n, _ in first.named_children()]
    if not all(type(layer) is type(first) and [n for n, _ in layer.named_children()] == names for layer in layers):
        return couple(meta_twin(model))

    def moved(paths: tuple[str, ...], layer: str) -> tuple[str, ...]:
        return tuple(layer + path[len(template.layer) :] for path in paths)

    return [
        dataclasses.replace(
            template,
            layer=f"{container}.{i}",
            f_modules=moved(template.f_modules, f"{container}.{i}"),
            g_modules=moved(template.g_modules, f"{container}.{i}"),
        )
        for i in range(len(layers))
    ]


def discover(model: nn.Module, tokens: int = 8) -> tuple[str, list[LayerHalves]]:
    """(path of the layer container, halves of each of its layers in order) for a causal LM, from its IR and one traced forward."""
    couplings = _couplings(model, tokens)
    if not couplings:
        raise ConversionError(f"cannot make {type(model).__name__} reversible: the couple pass found no coupling candidate in its layers")
    container = couplings[0].layer.rpartition(".")[0]
    layers = model.get_submodule(container)
    expected = [f"{container}.{i}" for i in range(len(layers))]
    got = [c.layer for c in couplings]
    if got != expected:
        missing = sorted(set(expected) - set(got)) or got
        raise ConversionError(
            f"cannot make {type(model).__name__} reversible: no coupling for {missing[0]} (found {len(got)} of {len(expected)} layers)"
        )
    twin = meta_twin(model)
    ids = example_ids(twin, next(twin.parameters()).device, tokens)
    with traced(twin, got) as records, torch.no_grad():
        twin(ids, attention_mask=torch.ones_like(ids))  # an explicit mask: no packed-sequence check (.item() fails on meta)
    return container, layer_halves(twin, couplings, records)
