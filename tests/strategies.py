"""Hypothesis strategies: random well-formed bwsk programs, and well-formed terms of a known arity.

Terms are built to pass the verifier by construction: `_TermBuilder.value` makes a term of
arity 0 and `_TermBuilder.function(n)` one of arity n, using the typing rules of the
combinators (B f g has f's arity when g is unary, S f g has one less than f's, and so on)
and real ATen overloads whose schemas accept the argument counts used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from bwsk.ir.dims import PRECEDENCE, Binary, Dim, Neg, negate, symbols, value_of
from bwsk.ir.program import STATE_KINDS, Definition, Input, Output, Program, State
from bwsk.ir.terms import HOLE, App, B, C, I, K, ListArg, Lit, Prim, Ref, S, Term, W, apply
from bwsk.ir.types import DTYPE_NAMES, SCALAR_KINDS, FunctionType, ScalarType, TensorType, TupleType, Type

# ---- names -------------------------------------------------------------------------------

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True)
_segments = st.from_regex(r"[A-Za-z0-9_]{1,5}", fullmatch=True)
# %names and @names: dotted paths whose segments may start with a digit (`%0`, `@layers.0.weight`).
ref_names = st.lists(_segments, min_size=1, max_size=3).map(".".join)

# ---- types ---------------------------------------------------------------------------------

# Keywords of the language are plain names inside a shape.
SYMBOLS = ("batch", "s0", "s1", "seq", "fn", "input", "from")


def _well_formed(dim: Dim) -> bool:
    """No division by a constant zero anywhere (the parser refuses it where it stands)."""
    if isinstance(dim, Binary):
        if not (_well_formed(dim.left) and _well_formed(dim.right)):
            return False
        return not (dim.op in ("//", "%") and not symbols(dim.right) and value_of(dim.right, {}) == 0)
    return _well_formed(dim.operand) if isinstance(dim, Neg) else True


def _compound(inner: st.SearchStrategy[Dim]) -> st.SearchStrategy[Dim]:
    return st.one_of(st.builds(Binary, st.sampled_from(list(PRECEDENCE)), inner, inner), inner.map(negate))


# Expressions mention a symbol (a constant one is checked to be a size when read, and may not be).
dim_expressions = (
    st.recursive(st.one_of(st.integers(-64, 64), st.sampled_from(SYMBOLS)), _compound, max_leaves=6)
    .filter(lambda d: isinstance(d, (Binary, Neg)) and bool(symbols(d)))
    .filter(_well_formed)
)
dims = st.one_of(
    st.integers(0, 4096),
    st.sampled_from(SYMBOLS),
    dim_expressions,
    identifiers,
)
tensor_types = st.builds(TensorType, st.sampled_from(list(DTYPE_NAMES)), st.lists(dims, max_size=4).map(tuple))
scalar_types = st.sampled_from(SCALAR_KINDS).map(ScalarType)


def _tuples(inner: st.SearchStrategy[Type]) -> st.SearchStrategy[Type]:
    return st.lists(inner, max_size=3).map(lambda items: TupleType(tuple(items)))


# Types of values (what inputs, outputs and arity-0 definitions may be declared as).
value_types = st.recursive(st.one_of(tensor_types, scalar_types), _tuples, max_leaves=4)


def function_types(arity: int) -> st.SearchStrategy[FunctionType]:
    """`fn(t1, ..., tn) -> r`; r is a value type, now and then itself a function type."""
    results = st.one_of(value_types, st.builds(FunctionType, st.lists(value_types, max_size=2).map(tuple), value_types))
    return st.builds(FunctionType, st.lists(value_types, min_size=arity, max_size=arity).map(tuple), results)


# ---- literals ------------------------------------------------------------------------------

SPECIAL_FLOATS = (math.inf, -math.inf, math.nan, 1e-05, -0.0, 0.1, 1e300, 5e-324, 2.5)
SPECIAL_STRINGS = ('say "hi"', "back\\slash", "line\nbreak", "tab\there", "é∀😀", "\x00\x7f", "# not a comment", "")
LAYOUTS = (torch.strided, torch.sparse_coo)
MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last, torch.channels_last_3d, torch.preserve_format)
DEVICES = (torch.device("cpu"), torch.device("cuda"), torch.device("cuda:1"), torch.device("meta"))

floats = st.one_of(st.floats(), st.sampled_from(SPECIAL_FLOATS))
strings = st.one_of(st.text(max_size=8), st.sampled_from(SPECIAL_STRINGS))
scalar_literals = st.one_of(
    st.integers(),
    floats,
    st.booleans(),
    st.none(),
    strings,
    st.sampled_from(list(DTYPE_NAMES)),
    st.sampled_from(LAYOUTS),
    st.sampled_from(MEMORY_FORMATS),
    st.sampled_from(DEVICES),
).map(Lit)
# Any static argument, nested lists included.
literal_args = st.recursive(scalar_literals, lambda inner: st.lists(inner, max_size=3).map(lambda xs: ListArg(tuple(xs))), max_leaves=6)
int_lists = st.lists(st.integers(-1, 64), max_size=4).map(lambda xs: ListArg(tuple(Lit(x) for x in xs)))


# ---- primitive templates -------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """An operator with `slots` tensor operands; each slot becomes a hole or an embedded value term."""

    slots: int
    build: Callable[[Callable, list], Prim]


def _unary(op: str) -> Template:
    return Template(1, lambda draw, s: Prim(op, (s[0],)))


def _binary(op: str) -> Template:
    return Template(2, lambda draw, s: Prim(op, (s[0], s[1])))


def _ternary(op: str) -> Template:
    return Template(3, lambda draw, s: Prim(op, (s[0], s[1], s[2])))


def _optional_kwargs(draw: Callable, **choices: st.SearchStrategy) -> tuple:
    return tuple((key, draw(strategy)) for key, strategy in choices.items() if draw(st.booleans()))


# Operators used where a program is only parsed and printed: argument counts fit the schemas,
# literal arguments cover every kind of static value.
ALL_TEMPLATES: tuple[Template, ...] = (
    _unary("aten.relu.default"),
    _unary("aten.sin.default"),
    _unary("aten.exp.default"),
    _unary("aten.t.default"),
    Template(1, lambda draw, s: Prim("aten.view.default", (s[0], draw(int_lists)))),
    Template(
        1,
        lambda draw, s: Prim(
            "aten.sum.dim_IntList",
            (s[0], draw(int_lists), draw(st.booleans().map(Lit))),
            _optional_kwargs(draw, dtype=st.sampled_from(list(DTYPE_NAMES)).map(Lit)),
        ),
    ),
    Template(1, lambda draw, s: Prim("aten.mul.Scalar", (s[0], draw(floats.map(Lit))))),
    Template(1, lambda draw, s: Prim("aten.clamp.default", (s[0], draw(literal_args), draw(literal_args)))),
    Template(
        1,
        lambda draw, s: Prim("aten.clone.default", (s[0],), _optional_kwargs(draw, memory_format=st.sampled_from(MEMORY_FORMATS).map(Lit))),
    ),
    Template(
        1,
        lambda draw, s: Prim(
            "aten._to_copy.default",
            (s[0],),
            _optional_kwargs(
                draw,
                dtype=st.sampled_from(list(DTYPE_NAMES)).map(Lit),
                layout=st.sampled_from(LAYOUTS).map(Lit),
                device=st.sampled_from(DEVICES).map(Lit),
                pin_memory=st.booleans().map(Lit),
            ),
        ),
    ),
    Template(1, lambda draw, s: Prim("operator.getitem", (s[0], draw(st.integers(-3, 3).map(Lit))))),
    _binary("aten.mul.Tensor"),
    _binary("aten.mm.default"),
    Template(2, lambda draw, s: Prim("aten.add.Tensor", (s[0], s[1]), _optional_kwargs(draw, alpha=floats.map(Lit)))),
    Template(2, lambda draw, s: Prim("aten.sub.Tensor", (s[0], s[1]), _optional_kwargs(draw, alpha=st.integers().map(Lit)))),
    Template(2, lambda draw, s: Prim("aten.cat.default", (ListArg((s[0], s[1])), draw(st.integers(-2, 2).map(Lit))))),
    Template(2, lambda draw, s: Prim("aten.stack.default", (ListArg((s[0], s[1])),))),
    Template(2, lambda draw, s: Prim("aten.index.Tensor", (s[0], ListArg((Lit(None), s[1]))))),
    Template(
        2, lambda draw, s: Prim("aten.div.Tensor_mode", (s[0], s[1]), (("rounding_mode", draw(st.one_of(st.none(), strings).map(Lit))),))
    ),
    _ternary("aten.where.self"),
    _ternary("aten.lerp.Tensor"),
    Template(
        3,
        lambda draw, s: Prim("aten.addmm.default", (s[0], s[1], s[2]), _optional_kwargs(draw, beta=floats.map(Lit), alpha=floats.map(Lit))),
    ),
    Template(3, lambda draw, s: Prim("aten.cat.default", (ListArg((s[0], s[1], s[2])), draw(st.integers(-2, 2).map(Lit))))),
    # A hole in a keyword argument: holes fill positional arguments first, then keywords.
    Template(4, lambda draw, s: Prim("aten.addcmul.default", (s[0], s[1], s[2]), (("value", s[3]),))),
)

# Elementwise operators on float tensors of one shape: terms built from these evaluate on any
# tensors of equal shape, so tests can run them.
ELEMENTWISE_TEMPLATES: tuple[Template, ...] = (
    _unary("aten.sin.default"),
    _unary("aten.tanh.default"),
    _unary("aten.neg.default"),
    Template(1, lambda draw, s: Prim("aten.clamp.default", (s[0], Lit(-0.5), Lit(0.75)))),
    _binary("aten.sub.Tensor"),
    _binary("aten.mul.Tensor"),
    Template(2, lambda draw, s: Prim("aten.add.Tensor", (s[0], s[1]), (("alpha", Lit(2)),))),
    _ternary("aten.lerp.Tensor"),
    Template(3, lambda draw, s: Prim("aten.addcmul.default", (s[0], s[1], s[2]), (("value", Lit(0.5)),))),
)


# ---- terms of a known arity ----------------------------------------------------------------


class _TermBuilder:
    """Draws closed terms of a requested arity from `scope` (refs with their arities) and `templates`."""

    def __init__(self, draw: Callable, scope: Sequence[tuple[Ref, int]], templates: Sequence[Template], leaf_values: Sequence[Term]):
        self.draw = draw
        self.scope = scope
        self.templates = templates
        self.leaf_values = leaf_values

    def refs(self, arity: int) -> list[Ref]:
        return [ref for ref, n in self.scope if n == arity]

    def choose(self, options: Sequence) -> object:
        return self.draw(st.sampled_from(options))

    def template(self, holes: int, depth: int) -> Prim | None:
        """A primitive with exactly `holes` holes; its other slots hold embedded value terms."""
        fitting = [t for t in self.templates if t.slots >= holes]
        if not fitting:
            return None
        template = self.choose(fitting)
        hole_slots = set(self.draw(st.permutations(range(template.slots)))[:holes])
        slots = [HOLE if i in hole_slots else self.value(depth - 1) for i in range(template.slots)]
        return template.build(self.draw, slots)

    def value(self, depth: int) -> Term:
        """A term of arity 0."""
        options = ["leaf"]
        if depth > 0:
            options += ["call", "embedded", "K", "I"]
        kind = self.choose(options)
        if kind == "leaf":
            return self.choose([*self.refs(0), *self.leaf_values])
        if kind == "call":
            n = self.draw(st.integers(1, 3))
            return apply(self.function(n, depth - 1), *(self.value(depth - 1) for _ in range(n)))
        if kind == "embedded":
            return self.template(0, depth) or self.value(0)
        if kind == "K":
            # K drops its second argument, which may be of any arity.
            return apply(K, self.value(depth - 1), self.term(self.draw(st.integers(0, 2)), depth - 1))
        return App(I, self.value(depth - 1))

    def term(self, arity: int, depth: int) -> Term:
        return self.value(depth) if arity == 0 else self.function(arity, depth)

    def function(self, n: int, depth: int) -> Term:
        """A term of arity n >= 1."""
        options = ["template", "ref"] if self.refs(n) else ["template"]
        if n == 1:
            options += ["I", "SKK", "CK"]
        if depth > 0:
            options += ["B", "S", "Cf", "Cfx", "W", "K", "If", "partial"]
        kind = self.choose(options)
        if kind == "template":
            prim = self.template(n, depth)
            if prim is not None:
                return prim
            kind = "K"  # no operator has that many operands: K adds a parameter
        if kind == "ref":
            return self.choose(self.refs(n))
        if kind == "I":
            return I
        if kind == "SKK":
            return apply(S, K, K)
        if kind == "CK":
            return apply(C, K, self.value(depth - 1))
        deeper = max(depth - 1, 0)
        if kind == "B":  # B f g x = f (g x)
            return apply(B, self.function(n, deeper), self.function(1, deeper))
        if kind == "S":  # S f g x = f x (g x)
            return apply(S, self.function(n + 1, deeper), self.function(1, deeper))
        if kind == "Cf" and n >= 2:  # C f x y = f y x
            return App(C, self.function(n, deeper))
        if kind in ("Cf", "Cfx"):
            return apply(C, self.function(n + 1, deeper), self.value(deeper))
        if kind == "W":  # W f x = f x x
            return App(W, self.function(n + 1, deeper))
        if kind == "K":  # K t x = t
            return App(K, self.term(n - 1, deeper))
        if kind == "If":
            return App(I, self.function(n, deeper))
        return App(self.function(n + 1, deeper), self.value(deeper))  # partial application


_FULL = Prim("aten.full.default", (ListArg((Lit(2), Lit(3))), Lit(1.5)), (("dtype", Lit(torch.float32)),))


@st.composite
def terms(
    draw, arity: int, scope: Sequence[tuple[Ref, int]], templates: Sequence[Template] = ELEMENTWISE_TEMPLATES, depth: int = 3
) -> Term:
    """A closed term of exactly `arity` over the refs in `scope`; leaves are the arity-0 refs."""
    leaves = [ref for ref, n in scope if n == 0]
    return _TermBuilder(draw, scope, templates, leaves or [_FULL]).term(arity, depth)


# ---- programs ------------------------------------------------------------------------------


@st.composite
def programs(draw, max_defs: int = 5) -> Program:
    """A random program that passes the verifier (types are declared or left out at random)."""
    n_inputs = draw(st.integers(0, 3))
    n_defs = draw(st.integers(0, max_defs))
    value_names = draw(st.lists(ref_names, min_size=n_inputs + n_defs, max_size=n_inputs + n_defs, unique=True))
    state_names = draw(st.lists(ref_names, max_size=3, unique=True))

    inputs = tuple(Input(name, draw(value_types)) for name in value_names[:n_inputs])
    state = tuple(State(name, draw(st.sampled_from(STATE_KINDS)), draw(tensor_types)) for name in state_names)
    scope: list[tuple[Ref, int]] = [(Ref("value", i.name), 0) for i in inputs]
    scope += [(Ref("state", s.name), 0) for s in state]
    declared: dict[Ref, Type | None] = {Ref("value", i.name): i.type for i in inputs}
    declared.update({Ref("state", s.name): s.type for s in state})

    defs = []
    for name in value_names[n_inputs:]:
        arity = draw(st.sampled_from((0, 0, 1, 1, 2, 3)))
        term = draw(terms(arity, scope, ALL_TEMPLATES, depth=draw(st.integers(0, 3))))
        if arity == 0:
            type_ = draw(st.one_of(st.none(), value_types))
        else:
            type_ = draw(st.one_of(st.none(), function_types(arity)))
        module = draw(st.one_of(st.none(), ref_names, strings))
        defs.append(Definition(name, term, type_, module))
        ref = Ref("value", name)
        scope.append((ref, arity))
        if arity == 0:
            declared[ref] = type_

    outputs = []
    if declared:
        for ref in draw(st.lists(st.sampled_from(sorted(declared, key=lambda r: (r.kind, r.name))), max_size=3)):
            outputs.append(Output(ref, declared[ref] if declared[ref] is not None else draw(value_types)))

    attrs = draw(st.lists(st.tuples(identifiers, strings), max_size=3, unique_by=lambda kv: kv[0]))
    name = draw(strings)
    return Program(name, inputs, state, tuple(defs), tuple(outputs), tuple(attrs))


# ---- random combinator terms for the rewriter ----------------------------------------------


def combinator_terms(atoms: Sequence[Term]) -> st.SearchStrategy[Term]:
    """Arbitrary application trees over S, K, B, C, W, I and `atoms` (not necessarily well formed)."""
    leaves = st.sampled_from((S, K, B, C, W, I, *atoms))
    return st.recursive(leaves, lambda inner: st.builds(App, inner, inner), max_leaves=24)
