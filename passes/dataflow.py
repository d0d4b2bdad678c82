"""The dataflow graph of a Program: every primitive call, the values it reads and writes.

Obtained by evaluating the program on meta tensors (no memory, no weights: every
operator's device argument is meta, so constructors allocate nothing either) with
an observer, so every combinator is reduced exactly as in a real run: a
function applied in four places yields four calls. Symbolic dimensions take the
sizes given (2 by default). Invariants: calls are in execution order, so the
graph is topologically sorted; every tensor operand of a call is a value
produced earlier or a source (an input or state); each call knows the innermost
function definition it ran in and that definition's module path.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from bwsk.errors import DimensionError, Location, quoted
from bwsk.ir.dims import MAX_MAGNITUDE, evaluate_dim, symbols
from bwsk.ir.evaluator import EvaluationError, Observer, evaluate
from bwsk.ir.program import Program
from bwsk.ir.terms import Prim
from bwsk.ir.types import ScalarType, TensorType, TupleType, Type, type_of_value
from bwsk.passes.tensor_info import TensorInfo

DEFAULT_SYMBOL_SIZE = 2
MAX_CPU_BYTES = 2**32  # tensors a check may create when it runs a program on the CPU (docs/ir.md)


@dataclass
class Value:
    """A tensor (or tuple of tensors) flowing through the program."""

    id: int
    type: Type
    producer: int | None  # index of the call that made it; None for a source
    source: str | None  # "%input" or "@state" name for sources
    activation: bool  # depends on a user input (False: weights, constants and what is made from them)

    @property
    def nbytes(self) -> int:
        return type_bytes(self.type)


@dataclass
class Call:
    """One primitive application, as executed."""

    index: int
    prim: Prim
    inputs: tuple[int, ...]  # value ids of tensor operands, in argument order
    output: int
    scope: str  # innermost definition whose body ran this call
    module: str  # that definition's module path ("" if none)
    scopes: tuple[str, ...]  # every definition being evaluated, outermost first
    args: tuple  # arguments with tensors replaced by TensorInfo (for the injectivity rules)
    kwargs: dict
    operand_positions: tuple[int, ...]  # index in `args` of each operand in `inputs`
    flops: int

    @property
    def target(self) -> str:
        return self.prim.op


@dataclass
class Dataflow:
    """Calls in execution order, the values between them, and the program outputs."""

    program: Program
    calls: list[Call] = field(default_factory=list)
    values: dict[int, Value] = field(default_factory=dict)
    outputs: list[int] = field(default_factory=list)

    def users(self) -> dict[int, list[int]]:
        """For each value id, the indices of the calls that read it."""
        found: dict[int, list[int]] = {v: [] for v in self.values}
        for call in self.calls:
            for value in dict.fromkeys(call.inputs):
                found[value].append(call.index)
        return found

    def graph(self) -> nx.DiGraph:
        """Calls as nodes, an edge for each value passed from one call to another."""
        graph = nx.DiGraph()
        graph.add_nodes_from(c.index for c in self.calls)
        for call in self.calls:
            for value in call.inputs:
                producer = self.values[value].producer
                if producer is not None:
                    graph.add_edge(producer, call.index, value=value)
        return graph

    def activation_operands(self, call: Call) -> list[int]:
        """Positions (into `call.inputs`) of the operands that carry activations."""
        return [i for i, v in enumerate(call.inputs) if self.values[v].activation]

    def require_cpu_budget(self, given: Collection[str], purpose: str) -> None:
        """Refuse (EvaluationError, one line) to run the program on the CPU if it would create over MAX_CPU_BYTES of tensors.

        Counted at the traced sizes: the inputs, the state not `given` (by @name), and every call's
        output, a view as if it were a copy (an upper bound).
        """
        sources = {f"@{name}" for name in given}
        needed = sum(value.nbytes for value in self.values.values() if value.source not in sources)
        if needed > MAX_CPU_BYTES:
            raise EvaluationError(
                f"program {quoted(self.program.name)}: {purpose} would run it on the CPU with {needed:,} bytes of tensors "
                f"(at most 2**32); check it at smaller sizes (a model: --tiny, --layers, --seq)"
            )


def type_bytes(type_: Type) -> int:
    if isinstance(type_, TensorType):
        size = math.prod(d for d in type_.shape if isinstance(d, int))
        return size * torch.empty((), dtype=type_.dtype).element_size()
    if isinstance(type_, TupleType):
        return sum(type_bytes(t) for t in type_.items)
    return 0


def meta_tensor(type_: TensorType, sizes: Mapping[str, int], where: Location | None = None) -> torch.Tensor:
    """An empty meta tensor of `type_`, each symbol at its size in `sizes` (else DEFAULT_SYMBOL_SIZE).

    A dimension that is not a size there, or a tensor of more than 2**62 bytes, is a
    DimensionError located at `where` (the declaration).
    """
    try:
        names = {name: sizes.get(name, DEFAULT_SYMBOL_SIZE) for dim in type_.shape for name in symbols(dim)}
        shape = [evaluate_dim(dim, names) for dim in type_.shape]
        nbytes = math.prod(shape) * torch.empty((), dtype=type_.dtype).element_size()
        if nbytes > MAX_MAGNITUDE:
            raise DimensionError(f"a tensor {type_} of {nbytes} bytes at these sizes (at most 2**62)")
    except DimensionError as error:
        raise DimensionError(error.message, where) from None
    return torch.empty(shape, dtype=type_.dtype, device="meta")


# Calls that only move or relabel data: no arithmetic.
MOVEMENT = frozenset(
    f"aten.{name}"
    for name in (
        "view.default _unsafe_view.default reshape.default permute.default transpose.int t.default "
        "expand.default unsqueeze.default squeeze.dim squeeze.dims alias.default slice.Tensor select.int "
        "split_with_sizes.default split.Tensor unbind.int clone.default contiguous.default cat.default "
        "sym_size.int index.Tensor index_select.default gather.default embedding.default _to_copy.default "
        "arange.start_step arange.default full.default scalar_tensor.default zeros.default ones.default empty.memory_format"
    ).split()
) | {"operator.getitem"}


def _flops(prim: Prim, args: list, kwargs: dict, result: Any) -> int:
    """torch's FLOP formula where it has one (matmuls, convolutions, attention); else one per output element.

    Composite operators (`linear`, `matmul` at the training level) count the matmuls they
    decompose into, so a model's FLOPs are the same at both levels.
    """
    if prim.op in MOVEMENT or not prim.op.startswith("aten."):
        return 0
    packet = getattr(torch.ops.aten, prim.op.split(".")[1], None)
    formula = flop_registry.get(packet)
    if formula is not None:
        return int(formula(*args, out_val=result, **kwargs))
    overload = getattr(packet, prim.op.split(".")[2], None) if packet is not None else None
    if overload is not None and torch._C._dispatch_has_kernel_for_dispatch_key(overload.name(), "CompositeImplicitAutograd"):
        with FlopCounterMode(display=False) as counter:
            overload(*args, **kwargs)
        if counter.get_total_flops():
            return int(counter.get_total_flops())
    tensors = [r for r in (result if isinstance(result, (tuple, list)) else [result]) if isinstance(r, torch.Tensor)]
    return sum(t.numel() for t in tensors)


class _Recorder(Observer):
    def __init__(self, flow: Dataflow, modules: Mapping[str, str]):
        self.flow = flow
        self.modules = modules
        self.ids: dict[int, int] = {}  # id(python object) -> value id
        self.keep: list[Any] = []  # keeps traced objects alive so their ids stay unique
        self.next_id = 0

    def new_value(self, obj: Any, producer: int | None, source: str | None, activation: bool) -> int:
        value_id = self.next_id
        self.next_id += 1
        self.flow.values[value_id] = Value(value_id, type_of_value(obj), producer, source, activation)
        if isinstance(obj, (torch.Tensor, tuple, list)):
            self.ids[id(obj)] = value_id
            self.keep.append(obj)
        return value_id

    def lookup(self, obj: Any) -> int | None:
        return self.ids.get(id(obj)) if isinstance(obj, (torch.Tensor, tuple, list)) else None

    def call(self, prim: Prim, args: list, kwargs: dict, result: Any, scope: list[str]) -> None:
        inputs: list[int] = []
        positions: list[int] = []

        def describe(value: Any, position: int) -> Any:
            found = self.lookup(value)
            if found is not None:
                inputs.append(found)
                positions.append(position)
                return TensorInfo(tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else value
            if isinstance(value, torch.Tensor):  # a tensor the trace has not seen: treat as a constant source
                inputs.append(self.new_value(value, None, None, False))
                positions.append(position)
                return TensorInfo(tuple(value.shape), value.dtype)
            if isinstance(value, (list, tuple)):
                return [describe(v, position) for v in value]
            return value

        described = tuple(describe(a, i) for i, a in enumerate(args))
        described_kwargs = {k: describe(v, len(args) + i) for i, (k, v) in enumerate(kwargs.items())}
        index = len(self.flow.calls)
        activation = any(self.flow.values[v].activation for v in inputs)
        output = self.new_value(result, index, None, activation)
        owner = scope[-1] if scope else ""
        self.flow.calls.append(
            Call(
                index=index,
                prim=prim,
                inputs=tuple(inputs),
                output=output,
                scope=owner,
                module=self.modules.get(owner, ""),
                scopes=tuple(scope),
                args=described,
                kwargs=described_kwargs,
                operand_positions=tuple(positions),
                flops=_flops(prim, args, kwargs, result),
            )
        )


def trace(program: Program, *, sizes: Mapping[str, int] | None = None) -> Dataflow:
    """The dataflow graph of `program` at the given symbolic sizes, computed on the meta device."""
    sizes = dict(sizes or {})
    flow = Dataflow(program)
    modules = {d.name: d.module or "" for d in program.defs}
    recorder = _Recorder(flow, modules)
    inputs = []
    for item in program.inputs:
        if isinstance(item.type, TensorType):
            value = meta_tensor(item.type, sizes, program.locate(("input", item.name)))
            recorder.new_value(value, None, f"%{item.name}", True)
        elif isinstance(item.type, ScalarType):
            value = {"int": DEFAULT_SYMBOL_SIZE, "float": 1.0, "bool": True}[item.type.kind]
        else:
            raise ValueError(f"input %{item.name} of type {item.type} cannot be traced")
        inputs.append(value)
    state = {}
    for item in program.state:
        if not isinstance(item.type, TensorType):
            raise ValueError(f"state @{item.name} of type {item.type} cannot be traced")
        tensor = meta_tensor(item.type, sizes, program.locate(("state", item.name)))
        recorder.new_value(tensor, None, f"@{item.name}", False)
        state[item.name] = tensor
    result = evaluate(program, inputs, state, observer=recorder, device=torch.device("meta"))
    for out in result if isinstance(result, tuple) else (result,):
        found = recorder.lookup(out)
        if found is not None:
            flow.outputs.append(found)
    return flow


def iter_tensor_infos(value: Any) -> Iterator[TensorInfo]:
    """Every TensorInfo inside a described argument."""
    if isinstance(value, TensorInfo):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_tensor_infos(item)
