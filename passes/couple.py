"""`couple`: residual structures and the reversible coupling blocks they could become.

The lowering writes a closed residual block as `%r = S aten.add.Tensor(_, _) %branch %x`
(x + F(x)); a parallel residual (GPT-NeoX) has a branch `S (B add F) G`
(x + F(x) + G(x)). A coupling block is y1 = x1 + F(x2), y2 = x2 + G(y1): it is
invertible whatever F and G are (x2 = y2 - G(y1), x1 = y1 - F(x2)), so
activations inside F and G need not be stored; backward rebuilds them at the
cost of running F and G once more.

Candidates: two sequential residuals in one layer (h1 = x + F(x), h2 = h1 + G(h1)),
or the two halves F, G of a parallel residual. Each candidate reports the
activation bytes F and G produce (what a reversible block stops storing), the
FLOPs of rebuilding them, and what the conversion changes in the function.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from bwsk.ir.printer import print_term
from bwsk.ir.program import Program
from bwsk.ir.terms import Comb, Prim, Ref, Term, children, spine
from bwsk.ir.types import TensorType
from bwsk.passes.analysis import Analysis, Pass, layer_of

ADD = "aten.add.Tensor"
CAST = "aten.to.dtype"
FLATTENS = ("aten.reshape.default", "aten.view.default")

SEQUENTIAL_CHANGE = (
    "with x1 = x2 = x the first stream is unchanged (y1 = h1) and G still reads h1; the second stream "
    "becomes x + G(h1) instead of h1 + G(h1) (it lacks F(x)), so the block's output must combine the "
    "streams (e.g. y1 + y2 - x); a converted model is trained or fine-tuned, not identical"
)
PARALLEL_CHANGE = (
    "G reads y1 = x + F(x) instead of x, so the block computes x + G(x + F(x)) on the second stream "
    "rather than x + F(x) + G(x): a different function of the same weights; a converted model is "
    "trained or fine-tuned, not identical"
)


@dataclass(frozen=True)
class Residual:
    """`%name = S add %branch %stream`: the value `name` is stream + branch(stream)."""

    name: str
    branch: str
    stream: str
    module: str


@dataclass(frozen=True)
class Coupling:
    """A candidate reversible block y1 = x1 + F(x2), y2 = x2 + G(y1)."""

    kind: str  # "sequential" or "parallel"
    layer: str
    residuals: tuple[str, ...]
    f: str
    g: str
    f_calls: int
    g_calls: int
    activation_bytes: int  # produced inside F and G (a reversible block keeps none of what backward needs of them)
    rebuild_flops: int  # running F and G again in backward
    changes: str
    f_modules: tuple[str, ...] = ()  # the layer's direct sub-modules F calls, in the order F applies them
    g_modules: tuple[str, ...] = ()


def _is_add(term: Term) -> bool:
    return isinstance(term, Prim) and term.op == ADD and term.arity == 2


def _stream_aliases(program: Program) -> dict[str, str]:
    """Values that are a stream under another name: y -> x for `%y = aten.to.dtype(%x, dtype)` where y has x's type
    (a no-op cast, e.g. RMSNorm's `.to(float32)` on fp32) and for a reshape or view of x that only merges its leading
    dimensions (OPT runs its MLP residual on (batch * tokens, hidden)): a row-wise half computes the same rows on x."""
    types = {d.name: d.type for d in program.defs} | {i.name: i.type for i in program.inputs}
    aliases = {}
    for definition in program.defs:
        term = definition.term
        if not (isinstance(term, Prim) and term.arity == 0 and term.args and isinstance(term.args[0], Ref)):
            continue
        source = types.get(term.args[0].name)
        if (term.op == CAST and source == definition.type) or (term.op in FLATTENS and _merges_leading(source, definition.type)):
            aliases[definition.name] = term.args[0].name
    return aliases


def _merges_leading(source: object, target: object) -> bool:
    """Whether `target` is `source` (static tensor types, same dtype) with its leading dimensions merged into one."""
    if not all(isinstance(t, TensorType) and t.is_static for t in (source, target)) or source.dtype != target.dtype:
        return False
    return (
        len(target.shape) == 2
        and len(source.shape) > 2
        and target.shape[-1] == source.shape[-1]
        and math.prod(source.shape) == math.prod(target.shape)
    )


def residuals(program: Program) -> list[Residual]:
    """Every `S add %branch %stream`; a stream read through a no-op cast or a flattening of leading dimensions is named by the
    value it aliases."""
    casts = _stream_aliases(program)
    found = []
    for definition in program.defs:
        head, args = spine(definition.term)
        if head is Comb("S") and len(args) == 3 and _is_add(args[0]) and isinstance(args[1], Ref) and isinstance(args[2], Ref):
            stream = casts.get(args[2].name, args[2].name)
            found.append(Residual(definition.name, args[1].name, stream, definition.module or ""))
    return found


def sub_blocks(half: Term, program: Program, layer: str) -> tuple[str, ...]:
    """The direct sub-modules of `layer` that `half` calls (module definitions and parameter owners), in application order.

    `B f g` applies g first; a definition of the layer itself (a branch) is followed into its term.
    """
    definitions = {d.name: d for d in program.defs}
    prefix = layer + "."
    found: list[str] = []

    def note(path: str) -> None:
        if path.startswith(prefix):
            block = prefix + path[len(prefix) :].split(".")[0]
            if block not in found:
                found.append(block)

    def visit(term: Term) -> None:
        head, args = spine(term)
        if head is Comb("B") and len(args) >= 2:
            for part in (*args[2:], args[1], args[0]):
                visit(part)
            return
        if isinstance(term, Ref) and term.kind == "state":
            note(term.name.rsplit(".", 1)[0])
        elif isinstance(term, Ref) and term.name in definitions:
            definition = definitions[term.name]
            if definition.module == layer:
                visit(definition.term)
            elif definition.module:
                note(definition.module)
        for child in children(term):
            visit(child)

    visit(half)
    return tuple(found)


def parallel_halves(branch: Term) -> tuple[Term, Term] | None:
    """F and G of a branch `S (B add F) G` (that is, x -> F(x) + G(x)), else None."""
    head, args = spine(branch)
    if head is not Comb("S") or len(args) != 2:
        return None
    inner, g = args
    inner_head, inner_args = spine(inner)
    if inner_head is Comb("B") and len(inner_args) == 2 and _is_add(inner_args[0]):
        return inner_args[1], g
    return None


def _definitions_in(term: Term) -> set[str]:
    found, stack = set(), [term]
    while stack:
        node = stack.pop()
        if isinstance(node, Ref) and node.kind == "value":
            found.add(node.name)
        stack.extend(children(node))
    return found


class Couple(Pass[list[Coupling]]):
    name = "couple"
    requires = ()
    summary = "residual structures and the reversible coupling blocks they could become"

    def run(self, analysis: Analysis) -> list[Coupling]:
        program = analysis.program
        terms = {d.name: d.term for d in program.defs}
        calls_in: dict[str, list] = defaultdict(list)
        for call in analysis.calls:
            for scope in set(call.scopes):
                calls_in[scope].append(call)
        flow = analysis.flow

        def cost(names: set[str]) -> tuple[int, int, int]:
            calls = {c.index: c for name in names for c in calls_in.get(name, ())}.values()
            produced = sum(flow.values[c.output].nbytes for c in calls if flow.values[c.output].activation)
            return len(calls), produced, sum(c.flops for c in calls)

        found: list[Coupling] = []
        chain = residuals(program)
        used: set[str] = set()
        for first, second in zip(chain, chain[1:]):
            if first.name in used or second.stream != first.name or layer_of(first.module) != layer_of(second.module):
                continue
            used.update((first.name, second.name))
            f_calls, f_bytes, f_flops = cost({first.branch})
            g_calls, g_bytes, g_flops = cost({second.branch})
            layer = layer_of(first.module)
            found.append(
                Coupling(
                    "sequential",
                    layer,
                    (first.name, second.name),
                    f"%{first.branch}",
                    f"%{second.branch}",
                    f_calls,
                    g_calls,
                    f_bytes + g_bytes,
                    f_flops + g_flops,
                    SEQUENTIAL_CHANGE,
                    sub_blocks(Ref("value", first.branch), program, layer),
                    sub_blocks(Ref("value", second.branch), program, layer),
                )
            )
        for residual in chain:
            if residual.name in used:
                continue
            halves = parallel_halves(terms[residual.branch])
            if halves is None:
                continue
            f, g = halves
            f_calls, f_bytes, f_flops = cost(_definitions_in(f))
            g_calls, g_bytes, g_flops = cost(_definitions_in(g))
            layer = layer_of(residual.module)
            found.append(
                Coupling(
                    "parallel",
                    layer,
                    (residual.name,),
                    print_term(f),
                    print_term(g),
                    f_calls,
                    g_calls,
                    f_bytes + g_bytes,
                    f_flops + g_flops,
                    PARALLEL_CHANGE,
                    sub_blocks(f, program, layer),
                    sub_blocks(g, program, layer),
                )
            )
        return found
