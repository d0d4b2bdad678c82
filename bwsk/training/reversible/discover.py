"""Which sub-modules of each layer form its F and G: the `couple` pass's answer, checked on one traced forward.

The couple pass (on the model's IR) names, per layer, the direct sub-modules
each half calls (`Coupling.f_modules`, `g_modules`). The IR drops the module of
parameterless calls (a dropout module inlines to `aten.dropout`), and a half is
called with side inputs, so one forward of a meta-device twin is traced with
hooks on every layer's direct children. The twin runs eager attention without a
KV cache whatever the model uses (sdpa and flash attention read tensor values
while building masks, which a meta tensor has not; which sub-modules a layer
calls, with which arguments, does not depend on the attention implementation).
From the trace:
- each half becomes a chain: every member's input is the previous step's output;
  a parameterless child that consumes the chain's output (a dropout) joins it;
- what the layer's own code (outside its children) does to the chain's output
  before the residual add is recorded too: a functional dropout (OPT) joins the
  half as a dropout step, casts and reshapes are passed through, anything else
  is refused (the coupling would leave it out); likewise for the value a half
  starts from;
- each step records the keyword side inputs its layer passed it, which must be
  the layer's own arguments, passed on unchanged;
- a child with parameters that the layer calls outside both halves is refused.
Nothing here is a table of module names: only the IR and the trace decide.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from bwsk.errors import first_line
from bwsk.training.reversible.coupling import Step
from bwsk.training.reversible.errors import ConversionError


@dataclass(frozen=True)
class LayerHalves:
    """One layer's coupling: its module path, the couple pass's kind, the steps of F and G, and the length of the tuple the
    layer returns (None: it returns the hidden state itself)."""

    layer: str
    kind: str
    f: tuple[Step, ...]
    g: tuple[Step, ...]
    outputs: int | None = None


TRANSPARENT = ("to", "view", "reshape", "contiguous")  # functions of the layer's own code a half's value passes through
RESIDUAL = "add"


@dataclass
class ChildCall:
    """One call of a layer's direct child during the trace (`order`: its place among the layer's calls)."""

    path: str
    input: torch.Tensor
    output: torch.Tensor
    keywords: dict[str, Any]
    order: int = 0


@dataclass
class LayerFunction:
    """One torch function the layer's own code called (not inside a child) during the trace."""

    name: str
    inputs: list[torch.Tensor]
    output: Any
    args: tuple
    kwargs: dict[str, Any]
    order: int


@dataclass
class LayerCall:
    """One call of a layer: its bound arguments, its children's calls and its own torch functions, in order."""

    arguments: dict[str, Any]
    children: list[ChildCall]
    functions: list[LayerFunction] = dataclasses.field(default_factory=list)
    outputs: int | None = None  # the length of the tuple it returned (None: a tensor)


class _LayerCode(TorchFunctionMode):
    """Records the torch functions a layer's own code calls while `current` is set and no child of it is running."""

    def __init__(self) -> None:
        super().__init__()
        self.current: LayerCall | None = None
        self.depth = 0
        self.order = itertools.count()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.current is not None and self.depth == 0:
            inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            self.current.functions.append(
                LayerFunction(getattr(func, "__name__", str(func)), inputs, result, args, kwargs, next(self.order))
            )
        return result


def meta_twin(model: nn.Module, layers: int | None = None) -> nn.Module:
    """A weightless copy of a transformers model (same class and config; meta device, eval mode, eager attention, no KV
    cache), with its first `layers` layers if given. Any other module is returned as it is.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return model
    config = copy.deepcopy(model.config)
    config.use_cache = False
    if layers is not None:
        config.num_hidden_layers = layers
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:layers]
    with torch.device("meta"):
        twin = type(model)._from_config(config, attn_implementation="eager")
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
    """Record, while active, each layer's first call: its direct children's calls and the torch functions of its own code."""
    records: dict[str, LayerCall] = {}
    handles = []
    code = _LayerCode()

    def on_layer(path: str):
        def hook(module, args, kwargs):
            if path not in records:
                _, side = bind_layer_call(module, args, kwargs)
                records[path] = code.current = LayerCall(side, [])

        return hook

    def off_layer(module, args, output):
        if code.current is not None:
            code.current.outputs = len(output) if isinstance(output, tuple) else None
        code.current = None

    def on_child_start(module, args):
        code.depth += 1

    def on_child(layer: str, path: str):
        def hook(module, args, kwargs, output):
            code.depth -= 1
            record = records.get(layer)
            if record is None or record is not code.current or any(c.path == path for c in record.children):
                return
            if len(args) > 1:
                raise ConversionError(
                    f"cannot make {layer} reversible: it passes {path} positional arguments besides the hidden state (a sub-module "
                    "given the residual adds it itself): F and G must be sub-module calls that return only their update"
                )
            keywords = dict(kwargs)
            first = args[0] if args else keywords.pop(next(iter(keywords)))
            out = output[0] if isinstance(output, tuple) else output
            record.children.append(ChildCall(path, first, out, keywords, next(code.order)))

        return hook

    for layer in layers:
        module = model.get_submodule(layer)
        handles.append(module.register_forward_pre_hook(on_layer(layer), with_kwargs=True))
        handles.append(module.register_forward_hook(off_layer))
        for name, child in module.named_children():
            handles.append(child.register_forward_pre_hook(on_child_start))
            handles.append(child.register_forward_hook(on_child(layer, f"{layer}.{name}"), with_kwargs=True))
    try:
        with code:
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
    links = [c for c in calls if c.path in members or (c.path not in other and _parameterless(model.get_submodule(c.path)))]
    outputs = {id(c.output) for c in links}  # a member reading one of these continues a chain (through a parameterless child)
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
    _require_plain_start(layer, half, chain[0], call)
    return tuple(Step(c.path, _keywords(layer, c, call.arguments)) for c in chain) + _tail(layer, half, chain[-1], call)


def _tail(layer: str, half: str, end: ChildCall, call: LayerCall) -> tuple[Step, ...]:
    """Dropout steps the layer's own code applies to the half's output before the residual add (refusing any other function)."""
    steps: list[Step] = []
    value, after = end.output, end.order
    while True:
        users = [f for f in call.functions if f.order > after and any(t is value for t in f.inputs) and isinstance(f.output, torch.Tensor)]
        if not users or users[0].name == RESIDUAL:
            return tuple(steps)
        use = users[0]
        if use.name == "dropout":
            steps.append(Step(layer, dropout=float(use.kwargs.get("p", use.args[1] if len(use.args) > 1 else 0.5))))
        elif use.name not in TRANSPARENT:
            raise ConversionError(
                f"cannot make {layer} reversible: {half} ends at {end.path}, whose output the layer's own code passes to "
                f"{use.name!r} before the residual add (outside its sub-modules: the coupling would leave it out)"
            )
        value, after = use.output, use.order


def _require_plain_start(layer: str, half: str, start: ChildCall, call: LayerCall) -> None:
    """Refuse a half whose first sub-module reads a value the layer's own code computed (other than a residual add, a cast
    or a reshape): the coupling gives the half the stream itself."""
    value, before = start.input, start.order
    while True:
        made = [f for f in call.functions if f.order < before and f.output is value]
        if not made or made[-1].name == RESIDUAL:
            return
        producer = made[-1]
        if producer.name not in TRANSPARENT or not producer.inputs:
            raise ConversionError(
                f"cannot make {layer} reversible: {half} starts at {start.path}, which reads the result of {producer.name!r} "
                "in the layer's own code (outside its sub-modules: the coupling would give it the stream instead)"
            )
        value, before = producer.inputs[0], producer.order


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
        found.append(LayerHalves(coupling.layer, coupling.kind, f, g, record.outputs))
    return found


def _couplings(model: nn.Module, tokens: int) -> list:
    """The couple pass's result on the IR of a one-layer meta twin, its coupling repeated for every layer of the full model.

    Layers of one stack share their class and sub-module names (checked), so one layer's F and G name every layer's;
    a model whose layers differ is exported in full.
    """
    import bwsk
    from bwsk.passes.couple import Couple

    def couple(twin: nn.Module) -> list:
        program = bwsk.lower_module(twin, (example_ids(twin, "meta", tokens),), level="training")
        return bwsk.analyze(program, passes=[Couple]).result(Couple)

    short = meta_twin(model, layers=1) if hasattr(model, "config") else model
    key = _twin_key(short, tokens) if short is not model else None
    if key is None:
        found = couple(short)
    else:
        if key not in _ONE_LAYER_COUPLINGS:
            _ONE_LAYER_COUPLINGS[key] = tuple(couple(short))
        found = list(_ONE_LAYER_COUPLINGS[key])
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


_ONE_LAYER_COUPLINGS: dict[tuple, tuple] = {}  # the couple pass's result on one-layer twins, by `_twin_key`


def _twin_key(twin: nn.Module, tokens: int) -> tuple | None:
    """What the couple pass's result on a one-layer meta twin depends on: its class, its whole config, attention
    implementation and example length (None when the config cannot be written out: then nothing is cached). Converting many models of
    one architecture (a sweep, a fit search, a test suite) then exports it once per process."""
    config = twin.config
    try:
        written = config.to_json_string(use_diff=False)
    except (TypeError, ValueError):
        return None
    return type(twin), written, str(getattr(config, "_attn_implementation", None)), tokens


def _why_uncoupled(model: nn.Module, tokens: int) -> str:
    """Why the couple pass found no coupling, from one traced forward of a one-layer twin, and what would make one."""
    from bwsk.training.blocks import block_list

    twin = meta_twin(model, layers=1)
    container, _ = block_list(twin)
    layer = f"{container}.0"
    ids = example_ids(twin, "meta", tokens)
    with traced(twin, [layer]) as records, torch.no_grad():
        twin(ids, attention_mask=torch.ones_like(ids))
    children = records[layer].children
    for source in children:
        readers = [c.path for c in children if c.input is source.output and not _parameterless(twin.get_submodule(c.path))]
        if len(readers) > 1:
            return (
                f"in {layer}, {' and '.join(readers)} both read the output of {source.path} (parallel halves sharing one norm): F and G "
                "would read the same normalised input; a coupling needs each half to start from its own stream (a norm per half, "
                "as GPT-NeoX's parallel residual has)"
            )
    return (
        f"the couple pass found in {layer} neither two residual adds in a row (h = x + F(x), then h + G(h)) nor a parallel "
        "residual x + F(x) + G(x) with a norm per half, each half a chain of sub-modules whose output the layer adds to its stream"
    )


def discover(model: nn.Module, tokens: int = 8) -> tuple[str, list[LayerHalves]]:
    """(path of the layer container, halves of each of its layers in order) for a causal LM, from its IR and one traced forward.

    Only the model's structure and config are read (never its tensors), and the export brings its own fake mode, so an
    active FakeTensorMode (a model built in one to measure memory without weights) is set aside meanwhile.
    """
    with unset_fake_temporarily():
        return _discovered(model, tokens)


def _discovered(model: nn.Module, tokens: int) -> tuple[str, list[LayerHalves]]:
    try:
        couplings = _couplings(model, tokens)
    except ConversionError:
        raise
    except Exception as error:  # torch.export raises many types for code it cannot trace; the user gets one line
        raise ConversionError(
            f"cannot make {type(model).__name__} reversible: exporting its one-layer meta twin failed: {first_line(error)}"
        ) from None
    if not couplings:
        raise ConversionError(f"cannot make {type(model).__name__} reversible: {_why_uncoupled(model, tokens)}")
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
