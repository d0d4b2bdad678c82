"""`seams`: the arithmetic at each seam of each coupling block, as kernel patterns.

The pass only finds the patterns; emitting their kernels' source is `bwsk.kernels.codegen`'s
(`emit_model`, which `bwsk-compile --emit triton` calls with this pass's result).

A coupling y1 = x1 + F(x2), y2 = x2 + G(y1) has two seams: y1 is normalised by the
norm G starts with, y2 by the norm its consumer starts with (the next coupling's F, or
what follows the last block, e.g. the final norm). The pass finds those norms in the
dataflow: from the stream value a consumer reads (through identity casts and aliases),
`aten.layer_norm` / `aten.native_layer_norm`, `aten.rms_norm`, or RMSNorm spelled out
(pow 2, mean over the last dim, add eps, rsqrt, mul, an optional cast, a weight mul).
Invariant: a norm is attributed to a consumer only if the consumer's calls read its output
(or run it), so a stream read by two norms (GPT-NeoX's parallel residual) is not ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bwsk.kernels.patterns import SeamPattern
from bwsk.passes.analysis import Analysis, Pass
from bwsk.passes.couple import Couple, Coupling, Residual, _definitions_in, parallel_halves, residuals
from bwsk.passes.dataflow import Call, Dataflow
from bwsk.passes.tensor_info import TensorInfo

ADD = "aten.add.Tensor"
IDENTITY = frozenset({"aten.to.dtype", "aten._to_copy.default", "aten.alias.default", "aten.clone.default", "aten.detach.default"})
LAYER_NORMS = {"aten.layer_norm.default": 4, "aten.native_layer_norm.default": 4}  # op -> position of eps
DEFAULT_LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class Seam:
    """One stream update of a coupling block (`y1` or `y2`) and the normalisation its consumer applies."""

    block: str
    stream: str
    pattern: SeamPattern
    weight: str | None  # the norm's @parameter names, when it has them
    bias: str | None


@dataclass(frozen=True)
class _Norm:
    pattern: SeamPattern
    calls: tuple[int, ...]  # the calls that compute it
    output: int  # value id of the normalised tensor
    weight: str | None
    bias: str | None


class _Graph:
    """Dataflow lookups the matchers share: readers of a value, the add closing a residual."""

    def __init__(self, flow: Dataflow):
        self.flow = flow
        self.readers = flow.users()
        self.last_in_scope: dict[str, Call] = {}
        for call in flow.calls:
            self.last_in_scope[call.scope] = call

    def residual_add(self, name: str) -> Call:
        """The add that closes residual `name` (the last call its definition runs); inputs[0] is the stream."""
        call = self.last_in_scope[name]
        if call.target != ADD:
            raise ValueError(f"residual {name} does not end in {ADD}")
        return call

    def calls_reading(self, value: int) -> list[Call]:
        return [self.flow.calls[i] for i in self.readers.get(value, ())]

    def aliases(self, value: int) -> list[int]:
        """`value` and every value made from it by identity casts and aliases."""
        found, stack = [value], [value]
        while stack:
            for call in self.calls_reading(stack.pop()):
                if call.target in IDENTITY and call.inputs[:1] and call.inputs[0] in found and call.output not in found:
                    found.append(call.output)
                    stack.append(call.output)
        return found

    def only_reader(self, value: int, target: str) -> Call | None:
        readers = [c for c in self.calls_reading(value) if c.target == target]
        return readers[0] if len(readers) == 1 else None

    def state(self, value: int) -> str | None:
        source = self.flow.values[value].source
        return source if source and source.startswith("@") else None

    def operand(self, call: Call, position: int) -> int | None:
        """The value id of argument `position` of `call`, if it is a traced tensor."""
        return call.inputs[call.operand_positions.index(position)] if position in call.operand_positions else None


def _layer_norm(graph: _Graph, call: Call, stream: set[int]) -> _Norm | None:
    if call.target not in LAYER_NORMS or graph.operand(call, 0) not in stream or len(call.args[1]) != 1:
        return None
    eps_at = LAYER_NORMS[call.target]
    eps = call.args[eps_at] if len(call.args) > eps_at else call.kwargs.get("eps", DEFAULT_LAYER_NORM_EPS)
    weight, bias = (graph.operand(call, i) if len(call.args) > i and isinstance(call.args[i], TensorInfo) else None for i in (2, 3))
    output, calls = call.output, [call.index]
    if call.target == "aten.native_layer_norm.default":
        first = [c for c in graph.calls_reading(call.output) if c.target == "operator.getitem" and c.args[1] == 0]
        if len(first) != 1:
            return None
        output, calls = first[0].output, calls + [first[0].index]
    pattern = SeamPattern("add", "layernorm", weight is not None, bias is not None, float(eps))
    return _Norm(
        pattern, tuple(calls), output, graph.state(weight) if weight is not None else None, graph.state(bias) if bias is not None else None
    )


def _rms_norm(graph: _Graph, call: Call, stream: set[int]) -> _Norm | None:
    """`aten.rms_norm`, or x * rsqrt(mean(x ** 2, -1, keepdim) + eps) [cast] [* weight] starting at `call` (the pow)."""
    if call.target == "aten.rms_norm.default" and graph.operand(call, 0) in stream and len(call.args[1]) == 1:
        weight = graph.operand(call, 2)
        eps = call.args[3] if len(call.args) > 3 and call.args[3] is not None else call.kwargs.get("eps")
        if eps is None:
            return None
        return _Norm(
            SeamPattern("add", "rmsnorm", weight is not None, False, float(eps)),
            (call.index,),
            call.output,
            graph.state(weight) if weight else None,
            None,
        )
    if call.target != "aten.pow.Tensor_Scalar" or graph.operand(call, 0) not in stream or call.args[1] != 2:
        return None
    rank = len(call.args[0].shape)
    mean = graph.only_reader(call.output, "aten.mean.dim")
    if mean is None or list(mean.args[1]) not in ([-1], [rank - 1]) or not (mean.args[2:3] == (True,) or mean.kwargs.get("keepdim")):
        return None
    add = graph.only_reader(mean.output, ADD)
    if add is None or len(add.inputs) != 1 or not isinstance(add.args[1], (int, float)):
        return None
    rsqrt = graph.only_reader(add.output, "aten.rsqrt.default")
    scale = rsqrt and graph.only_reader(rsqrt.output, "aten.mul.Tensor")
    if scale is None or not (set(scale.inputs) - {rsqrt.output}) <= stream:
        return None
    calls, output = [call.index, mean.index, add.index, rsqrt.index, scale.index], scale.output
    cast = [c for c in graph.calls_reading(output) if c.target in IDENTITY]
    if len(cast) == 1:
        calls.append(cast[0].index)
        output = cast[0].output
    weight = None
    for mul in graph.calls_reading(output):
        other = [v for v in mul.inputs if v != output]
        if (
            mul.target == "aten.mul.Tensor"
            and len(other) == 1
            and graph.state(other[0])
            and len(mul.args[mul.inputs.index(other[0])].shape) == 1
        ):
            weight, output = other[0], mul.output
            calls.append(mul.index)
            break
    pattern = SeamPattern("add", "rmsnorm", weight is not None, False, float(add.args[1]))
    return _Norm(pattern, tuple(calls), output, graph.state(weight) if weight is not None else None, None)


def norms_reading(graph: _Graph, value: int) -> list[_Norm]:
    """Every normalisation that starts at `value` (or an identity cast of it)."""
    stream = set(graph.aliases(value))
    found = []
    for alias in stream:
        for call in graph.calls_reading(alias):
            norm = _layer_norm(graph, call, stream) or _rms_norm(graph, call, stream)
            if norm is not None and norm.calls not in [n.calls for n in found]:
                found.append(norm)
    return sorted(found, key=lambda n: n.calls)


def _serves(graph: _Graph, norm: _Norm, consumer: set[str]) -> bool:
    """Whether a call of `consumer` (definition names) runs the norm or reads its output."""
    calls = [graph.flow.calls[i] for i in norm.calls] + graph.calls_reading(norm.output)
    return any(consumer & set(call.scopes) for call in calls)


@dataclass(frozen=True)
class _Block:
    """A coupling located in the dataflow: the values its halves read, and the definitions each half runs."""

    coupling: Coupling
    f_input: int
    g_input: int
    output: int
    f_defs: set[str]
    g_defs: set[str]


def _locate(graph: _Graph, coupling: Coupling, by_name: dict[str, Residual], terms: dict) -> _Block:
    if coupling.kind == "sequential":
        first, second = (by_name[name] for name in coupling.residuals)
        first_add = graph.residual_add(first.name)
        output = graph.residual_add(second.name).output
        return _Block(coupling, first_add.inputs[0], first_add.output, output, {first.branch}, {second.branch})
    residual = by_name[coupling.residuals[0]]
    add = graph.residual_add(residual.name)
    halves = parallel_halves(terms[residual.branch])
    assert halves is not None, f"parallel coupling {residual.name} has no halves"
    return _Block(coupling, add.inputs[0], add.inputs[0], add.output, _definitions_in(halves[0]), _definitions_in(halves[1]))


def _norm_for(graph: _Graph, value: int, consumer: set[str] | None) -> _Norm | None:
    """The norm `consumer` starts with when it reads `value`; without a known consumer, the one norm that reads it."""
    norms = norms_reading(graph, value)
    if consumer is not None:
        norms = [n for n in norms if _serves(graph, n, consumer)]
    return norms[0] if len(norms) == 1 else None


def find_seams(analysis: Analysis, couplings: Iterable[Coupling]) -> list[Seam]:
    graph = _Graph(analysis.flow)
    by_name = {r.name: r for r in residuals(analysis.program)}
    terms = {d.name: d.term for d in analysis.program.defs}
    blocks = [_locate(graph, c, by_name, terms) for c in couplings]
    next_f = {block.f_input: block.f_defs for block in blocks}
    seams = []
    for block in blocks:
        for stream, value, consumer in (("y1", block.g_input, block.g_defs), ("y2", block.output, next_f.get(block.output))):
            norm = _norm_for(graph, value, consumer)
            if norm is None:
                seams.append(Seam(block.coupling.layer, stream, SeamPattern("add", "none", False, False, 0.0), None, None))
            else:
                seams.append(Seam(block.coupling.layer, stream, norm.pattern, norm.weight, norm.bias))
    return seams


class Seams(Pass[list[Seam]]):
    name = "seams"
    requires = ("couple",)
    summary = "the add and normalisation at each seam of each coupling block, as Triton kernel patterns"

    def run(self, analysis: Analysis) -> list[Seam]:
        return find_seams(analysis, analysis.result(Couple))
