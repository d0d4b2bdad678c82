"""Hash-consed IR terms.

Every node is interned: building a node equal in structure to a live one returns
that very object, so structural equality is identity (`a == b` iff `a is b`),
hashing is by identity, and any cache keyed on nodes is a common-subexpression
table for free. Nodes are immutable.

Terms:
  Comb(name)        a combinator S, K, B, C, W or I
  Prim(op, args, kwargs)
                    an ATen (or operator.*) overload with its argument template:
                    each argument is a Hole (to be filled by application, in
                    order), a Lit (static value), a ListArg, or an embedded Term
  Ref(kind, name)   a named value (%name: input or definition) or state (@name:
                    parameter, buffer, constant)
  App(fn, arg)      curried application
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import torch

_TABLE: weakref.WeakValueDictionary[tuple, Node] = weakref.WeakValueDictionary()

COMBINATOR_ARITY: dict[str, int] = {"S": 3, "K": 2, "B": 3, "C": 3, "W": 2, "I": 1}


class Node:
    """An interned, immutable node. Subclasses list their fields in `_fields`."""

    __slots__ = ("__weakref__",)
    _fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _intern(cls, key: tuple, *values: Any) -> Any:
        full_key = (cls, *key)
        node = _TABLE.get(full_key)
        if node is None:
            node = object.__new__(cls)
            for field, value in zip(cls._fields, values):
                object.__setattr__(node, field, value)
            _TABLE[full_key] = node
        return node

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __copy__(self) -> Node:
        return self

    def __deepcopy__(self, memo: dict) -> Node:
        return self

    def __reduce__(self) -> tuple:
        return (type(self), tuple(getattr(self, f) for f in self._fields))

    def __repr__(self) -> str:
        fields = ", ".join(repr(getattr(self, f)) for f in self._fields)
        return f"{type(self).__name__}({fields})"


class Term(Node):
    """A node that denotes a value or a function (everything but Hole/Lit/ListArg)."""

    __slots__ = ()


class Comb(Term):
    """One of the combinators S, K, B, C, W, I."""

    __slots__ = ("name",)
    _fields = ("name",)
    name: str

    def __new__(cls, name: str) -> Comb:
        if name not in COMBINATOR_ARITY:
            raise ValueError(f"unknown combinator {name!r}")
        return cls._intern((name,), name)

    @property
    def arity(self) -> int:
        return COMBINATOR_ARITY[self.name]


class Ref(Term):
    """A reference: kind "value" (%name: an input or a definition) or "state" (@name)."""

    __slots__ = ("kind", "name")
    _fields = ("kind", "name")
    kind: str
    name: str

    def __new__(cls, kind: str, name: str) -> Ref:
        if kind not in ("value", "state"):
            raise ValueError(f"unknown reference kind {kind!r}")
        return cls._intern((kind, name), kind, name)


class App(Term):
    """Curried application `fn arg`."""

    __slots__ = ("fn", "arg")
    _fields = ("fn", "arg")
    fn: Term
    arg: Term

    def __new__(cls, fn: Term, arg: Term) -> App:
        return cls._intern((fn, arg), fn, arg)


class Hole(Node):
    """The `_` in a primitive's argument template: filled by the next applied argument."""

    __slots__ = ()

    def __new__(cls) -> Hole:
        return cls._intern(())


LitValue = int | float | bool | str | None | torch.dtype | torch.layout | torch.memory_format | torch.device


def _lit_key(value: LitValue) -> tuple:
    """A key that keeps 1, 1.0 and True apart and makes nan equal to itself."""
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    if isinstance(value, (bool, int, str)) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, (torch.dtype, torch.layout, torch.memory_format, torch.device)):
        return (type(value).__name__, str(value))
    raise TypeError(f"not a static IR value: {value!r} ({type(value).__name__})")


class Lit(Node):
    """A static argument: int, float, bool, str, None, dtype, layout, memory format or device."""

    __slots__ = ("value",)
    _fields = ("value",)
    value: LitValue

    def __new__(cls, value: LitValue) -> Lit:
        return cls._intern(_lit_key(value), value)


class ListArg(Node):
    """A list argument (e.g. a shape, or the tensors of `cat`); items are arguments."""

    __slots__ = ("items",)
    _fields = ("items",)
    items: tuple[Arg, ...]

    def __new__(cls, items: tuple[Arg, ...]) -> ListArg:
        items = tuple(items)
        return cls._intern(items, items)


Arg = Hole | Lit | ListArg | Term


def as_arg(value: object) -> Arg:
    """A template argument from a node or a plain Python value (lists become ListArg, scalars Lit)."""
    if isinstance(value, Node):
        return value
    if isinstance(value, (list, tuple)):
        return ListArg(tuple(as_arg(v) for v in value))
    return Lit(value)


def _holes_in(arg: Arg) -> int:
    if isinstance(arg, Hole):
        return 1
    if isinstance(arg, ListArg):
        return sum(_holes_in(item) for item in arg.items)
    return 0


class Prim(Term):
    """An operator overload with an argument template; its arity is its number of holes.

    Holes are filled left to right (positional arguments first, then keyword
    arguments in order); embedded terms are evaluated in place.
    """

    __slots__ = ("op", "args", "kwargs", "arity")
    _fields = ("op", "args", "kwargs", "arity")
    op: str
    args: tuple[Arg, ...]
    kwargs: tuple[tuple[str, Arg], ...]
    arity: int

    def __new__(cls, op: str, args: tuple[Arg, ...] = (), kwargs: tuple[tuple[str, Arg], ...] = ()) -> Prim:
        op = canonical_name(op)
        args = tuple(as_arg(a) for a in args)
        kwargs = tuple((key, as_arg(a)) for key, a in kwargs)
        arity = sum(_holes_in(a) for a in args) + sum(_holes_in(a) for _, a in kwargs)
        return cls._intern((op, args, kwargs), op, args, kwargs, arity)

    def __reduce__(self) -> tuple:
        return (Prim, (self.op, self.args, self.kwargs))


def canonical_name(op: str) -> str:
    """`_operator.mul` and `operator.mul` name one operator; terms always hold the latter."""
    return "operator" + op[len("_operator") :] if op.startswith("_operator.") else op


HOLE = Hole()
S, K, B, C, W, I = (Comb(name) for name in "SKBCWI")


def apply(fn: Term, *args: Term) -> Term:
    """`fn a1 a2 ...` as nested applications."""
    for arg in args:
        fn = App(fn, arg)
    return fn


def spine(term: Term) -> tuple[Term, list[Term]]:
    """Split `h a1 ... an` into its head `h` and arguments `[a1, ..., an]`."""
    args: list[Term] = []
    while isinstance(term, App):
        args.append(term.arg)
        term = term.fn
    args.reverse()
    return term, args


def embedded_terms(arg: Arg) -> Iterator[Term]:
    """The terms embedded in an argument template, left to right."""
    if isinstance(arg, Term):
        yield arg
    elif isinstance(arg, ListArg):
        for item in arg.items:
            yield from embedded_terms(item)


def children(term: Term) -> Iterator[Term]:
    """Direct sub-terms: an application's function and argument, a primitive's embedded terms."""
    if isinstance(term, App):
        yield term.fn
        yield term.arg
    elif isinstance(term, Prim):
        for arg in term.args:
            yield from embedded_terms(arg)
        for _, arg in term.kwargs:
            yield from embedded_terms(arg)
