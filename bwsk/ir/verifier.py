"""The verifier: the invariants every Program satisfies after parsing and after every pass.

Rules (each raises a located `VerifyError`):
  names        every name is well formed; inputs, definitions and state are each named once
  scope        a %name is an input or a definition above its use; an @name is declared state
  operators    every primitive names a known operator and its template fits the schema
  arity        combinators and primitives get the right number of arguments: each
               definition reduces, with fresh first-order arguments, to saturated
               primitive calls whose arguments are first-order values
  types        a definition declared with a function type has that many parameters, one
               declared with a value type has none; inputs have value types; an output
               is a first-order value whose declared type matches its source's
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from bwsk.errors import Location, VerifyError
from bwsk.ir import ops
from bwsk.ir.program import STATE_KINDS, Program
from bwsk.ir.terms import App, Comb, Prim, Ref, Term, children
from bwsk.ir.types import FunctionType, Type

NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\Z")
_FUEL = 100_000


class _Var:
    """A fresh first-order argument used to reduce a definition symbolically."""

    __slots__ = ()


class _SymApp:
    """An application built during symbolic reduction (its argument may hold a _Var)."""

    __slots__ = ("fn", "arg")

    def __init__(self, fn: object, arg: object):
        self.fn, self.arg = fn, arg


class ArityError(Exception):
    def __init__(self, message: str, culprit: Term | None):
        super().__init__(message)
        self.culprit = culprit


def _describe(head: object) -> str:
    if isinstance(head, Prim):
        return head.op
    if isinstance(head, Ref):
        return ("%" if head.kind == "value" else "@") + head.name
    if isinstance(head, Comb):
        return head.name
    return "an argument"


def _unwind(sym: object, rest: list) -> tuple[object, list]:
    args: list = []
    while True:
        if isinstance(sym, App):
            args.append(sym.arg)
            sym = sym.fn
        elif isinstance(sym, _SymApp):
            args.append(sym.arg)
            sym = sym.fn
        else:
            break
    args.reverse()
    return sym, args + rest


def _fire(comb: Comb, args: list) -> tuple[object, list]:
    """One combinator step on symbolic arguments: returns the new head and arguments."""
    name = comb.name
    if name == "S":
        f, g, x, *rest = args
        return _unwind(f, [x, _SymApp(g, x), *rest])
    if name == "K":
        x, _, *rest = args
        return _unwind(x, rest)
    if name == "B":
        f, g, x, *rest = args
        return _unwind(f, [_SymApp(g, x), *rest])
    if name == "C":
        f, x, y, *rest = args
        return _unwind(f, [y, x, *rest])
    if name == "W":
        f, x, *rest = args
        return _unwind(f, [x, x, *rest])
    x, *rest = args
    return _unwind(x, rest)


class ArityChecker:
    """Computes the arity of terms; `arity_of_ref` gives the arity of each %name (0 for inputs, @state)."""

    def __init__(self, arity_of_ref: Callable[[Ref], int]):
        self.arity_of_ref = arity_of_ref
        self.cache: dict[Term, int] = {}
        self.fuel = _FUEL

    def arity(self, term: Term) -> int:
        """Number of first-order arguments `term` takes before it is a value; raises ArityError."""
        found = self.cache.get(term)
        if found is None:
            found = self._check(term)
            self.cache[term] = found
        return found

    def _check(self, sym: object) -> int:
        padded = 0
        head, args = _unwind(sym, [])
        while isinstance(head, Comb):
            self.fuel -= 1
            if self.fuel < 0:
                raise ArityError("does not normalise (reduction budget exhausted)", head)
            missing = head.arity - len(args)
            if missing > 0:
                args = args + [_Var() for _ in range(missing)]
                padded += missing
            if head.name == "K":
                # Call-by-value evaluates the argument K discards, so it must be well formed too
                # (of any arity, but with no higher-order use of a fresh argument).
                dropped = args[1]
                self.arity(dropped) if isinstance(dropped, Term) else self._check(dropped)
            head, args = _fire(head, args)
        if isinstance(head, Prim):
            for embedded in children(head):
                if self.arity(embedded) != 0:
                    raise ArityError(f"an argument embedded in {head.op} is a function, not a value", head)
            takes = head.arity
        elif isinstance(head, Ref):
            takes = self.arity_of_ref(head)
        else:
            takes = 0
        if len(args) > takes:
            if isinstance(head, _Var):
                raise ArityError("a function is expected where a value stands (higher-order use is not allowed)", None)
            raise ArityError(f"{_describe(head)} takes {takes} argument(s) but is applied to {len(args)}", head)
        for arg in args:
            arity = self.arity(arg) if isinstance(arg, Term) else self._check(arg)
            if arity != 0:
                raise ArityError(f"{_describe(head)} is given a function (arity {arity}) where a value is expected", head)
        return takes - len(args) + padded


def _sub_nodes(term: Term) -> list[Term]:
    """Every sub-term, in order, without repeats."""
    seen: dict[Term, None] = {}
    stack = [term]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen[node] = None
        stack.extend(reversed(list(children(node))))
    return list(seen)


def _check_template(prim: Prim) -> str | None:
    """None if `prim` names a known operator and its template fits the schema, else why not."""
    if ops.resolve(prim.op) is None:
        return f"unknown operator {prim.op!r}"
    problem = ops.signature(prim.op).accepts(len(prim.args), tuple(k for k, _ in prim.kwargs))
    return f"{prim.op} {problem}" if problem else None


class _Verifier:
    def __init__(self, program: Program):
        self.program = program

    def error(self, message: str, *keys: tuple) -> VerifyError:
        location = self.program.locate(*keys)
        return VerifyError(message, location or Location(f"<program {self.program.name}>", 1, 1))

    def run(self) -> None:
        program = self.program
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
        values: dict[str, int] = {}
        for item in program.inputs:
            self.check_name(item.name, ("input", item.name))
            if item.name in values:
                raise self.error(f"input %{item.name} is declared twice", ("input", item.name))
            if isinstance(item.type, FunctionType):
                raise self.error(f"input %{item.name} has a function type; inputs are values", ("input", item.name))
            values[item.name] = 0
        state: dict[str, Type] = {}
        for item in program.state:
            self.check_name(item.name, ("state", item.name))
            if item.kind not in STATE_KINDS:
                raise self.error(f"@{item.name} has unknown kind {item.kind!r}", ("state", item.name))
            if item.name in state:
                raise self.error(f"@{item.name} is declared twice", ("state", item.name))
            state[item.name] = item.type
        defined_later = {d.name for d in program.defs}
        checker = ArityChecker(lambda ref: values.get(ref.name, 0) if ref.kind == "value" else 0)
        for index, definition in enumerate(program.defs):
            name = definition.name
            where = ("redef", name, index), ("def", name)
            self.check_name(name, *where)
            if name in values:
                kind = "an input" if any(i.name == name for i in program.inputs) else "defined above"
                raise self.error(f"duplicate definition: %{name} is already {kind}", *where)
            for node in _sub_nodes(definition.term):
                node_key = ("node", name, node)
                if isinstance(node, Ref) and node.kind == "value" and node.name not in values:
                    why = "used before its definition" if node.name in defined_later else "undefined name"
                    raise self.error(f"{why}: %{node.name}", node_key, *where)
                if isinstance(node, Ref) and node.kind == "state" and node.name not in state:
                    raise self.error(f"undeclared state: @{node.name} (declare it with param, buffer or const)", node_key, *where)
                if isinstance(node, Prim):
                    problem = _check_template(node)
                    if problem:
                        raise self.error(problem, node_key, *where)
            checker.fuel = _FUEL  # the reduction budget is per definition, not per program
            try:
                arity = checker.arity(definition.term)
            except ArityError as error:
                culprit = ("node", name, error.culprit) if error.culprit is not None else ("def", name)
                raise self.error(f"in %{name}: {error}", culprit, *where) from None
            declared = definition.type
            if declared is not None:
                expected = declared.arity if isinstance(declared, FunctionType) else 0
                if arity != expected:
                    raise self.error(f"%{name} is declared {declared} ({expected} parameter(s)) but its term takes {arity}", *where)
            values[name] = arity
        self.check_outputs(values, state)

    def check_name(self, name: str, *keys: tuple) -> None:
        if not NAME.match(name):
            raise self.error(f"malformed name {name!r} (letters, digits, _ and dots)", *keys)

    def check_outputs(self, values: dict[str, int], state: dict[str, Type]) -> None:
        declared: dict[str, Type | None] = {i.name: i.type for i in self.program.inputs}
        declared.update({d.name: d.type for d in self.program.defs})
        for index, output in enumerate(self.program.outputs):
            ref = output.ref
            key = ("output", index)
            if ref.kind == "state":
                if ref.name not in state:
                    raise self.error(f"undeclared state: @{ref.name}", key)
                source = state[ref.name]
            else:
                if ref.name not in values:
                    raise self.error(f"undefined name: %{ref.name}", key)
                if values[ref.name] != 0:
                    raise self.error(f"output %{ref.name} is a function (arity {values[ref.name]}), not a value", key)
                source = declared[ref.name]
            if isinstance(output.type, FunctionType):
                raise self.error(f"output {'%' if ref.kind == 'value' else '@'}{ref.name} has a function type; outputs are values", key)
            if source is not None and source != output.type:
                raise self.error(f"output declared {output.type} but its source is {source}", key)


def verify(program: Program) -> Program:
    """Check every invariant of `program`; return it unchanged, or raise VerifyError."""
    _Verifier(program).run()
    return program
