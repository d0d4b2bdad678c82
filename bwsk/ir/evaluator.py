"""Evaluate a Program on tensors: call-by-value combinator reduction over ATen calls.

Each definition is evaluated once per call, in order, into an environment; a
definition that is a function evaluates to a closure. Combinators fire when they
have all their arguments (S f g x = f x (g x); K x y = x; B f g x = f (g x);
C f x y = f y x; W f x = f x x; I x = x); a primitive fires when its holes are
filled. Arguments are evaluated once before they are passed, so S and W share
their argument instead of computing it twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bwsk.errors import BwskError, first_line
from bwsk.ir import ops
from bwsk.ir.program import Program
from bwsk.ir.terms import App, Arg, Comb, Hole, ListArg, Lit, Prim, Ref, Term, spine


class EvaluationError(BwskError):
    """A program cannot be evaluated on the given values."""


@dataclass(frozen=True)
class Closure:
    """A combinator or primitive waiting for `head.arity - len(args)` more arguments."""

    head: Comb | Prim
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Named:
    """A function definition's value, tagged with its name so observers know whose body runs."""

    name: str
    value: Any


class Observer:
    """Told of every primitive call during evaluation (see `bwsk.passes.dataflow`)."""

    def call(self, prim: Prim, args: list, kwargs: dict, result: Any, scope: list[str]) -> None:
        raise NotImplementedError


def _fill(arg: Arg, values: list, env: _Env) -> Any:
    """Instantiate an argument template: holes take `values` in order, terms are evaluated."""
    if isinstance(arg, Hole):
        return values.pop()
    if isinstance(arg, Lit):
        return arg.value
    if isinstance(arg, ListArg):
        return [_fill(item, values, env) for item in arg.items]
    return env.eval(arg)


class _Env:
    def __init__(self, values: dict[str, Any], state: Mapping[str, Any], observer: Observer | None = None, device: Any = None):
        self.values = values
        self.state = state
        self.observer = observer
        self.device = device
        self.scope: list[str] = []

    def eval(self, term: Term) -> Any:
        if isinstance(term, App):
            head, args = spine(term)
            return self.apply(self.eval(head), [self.eval(a) for a in args])
        if isinstance(term, Ref):
            if term.kind == "value":
                return self.values[term.name]
            try:
                return self.state[term.name]
            except KeyError:
                raise EvaluationError(f"no value given for state @{term.name} (pass it in params=)") from None
        if isinstance(term, Prim) and term.arity == 0:
            return self.call(term, [])
        return Closure(term, ())

    def apply(self, function: Any, args: list[Any]) -> Any:
        while args:
            if isinstance(function, Named):
                self.scope.append(function.name)
                try:
                    return self.apply(function.value, args)
                finally:
                    self.scope.pop()
            if not isinstance(function, Closure):
                raise EvaluationError(f"a {type(function).__name__} value is applied to an argument")
            pending = function.args + tuple(args)
            needed = function.head.arity
            if len(pending) < needed:
                return Closure(function.head, pending)
            taken, args = list(pending[:needed]), list(pending[needed:])
            function = self.fire(function.head, taken)
        return function

    def fire(self, head: Comb | Prim, args: list[Any]) -> Any:
        if isinstance(head, Prim):
            return self.call(head, args)
        name = head.name
        if name == "S":
            f, g, x = args
            return self.apply(f, [x, self.apply(g, [x])])
        if name == "K":
            return args[0]
        if name == "B":
            f, g, x = args
            return self.apply(f, [self.apply(g, [x])])
        if name == "C":
            f, x, y = args
            return self.apply(f, [y, x])
        if name == "W":
            f, x = args
            return self.apply(f, [x, x])
        return args[0]

    def call(self, prim: Prim, holes: list[Any]) -> Any:
        function = ops.resolve(prim.op)
        if function is None:
            raise EvaluationError(f"unknown operator {prim.op!r}")
        stack = list(reversed(holes))
        args = [_fill(a, stack, self) for a in prim.args]
        kwargs = {key: _fill(a, stack, self) for key, a in prim.kwargs}
        if self.device is not None:
            ops.signature(prim.op).on_device(args, kwargs, self.device)
        try:
            result = function(*args, **kwargs)
        except (RuntimeError, TypeError, ValueError, IndexError, NotImplementedError, ArithmeticError) as error:
            raise EvaluationError(f"{prim.op} failed: {first_line(error)}") from error
        if self.observer is not None:
            self.observer.call(prim, args, kwargs, result, self.scope)
        return result


def evaluate(
    program: Program,
    inputs: Sequence[Any],
    params: Mapping[str, Any],
    *,
    observer: Observer | None = None,
    device: Any = None,
) -> Any:
    """The program's outputs on `inputs` (positional, in declaration order) and `params` (by @name).

    Returns the single output itself, or a tuple when the program has several. An
    `observer` is told of every primitive call; `device` becomes every operator's device
    argument, given or not (so a program lowered on one device runs on another, and on
    "meta" a constructor such as `aten.ones.default([20000, 20000])` allocates nothing).
    """
    if len(inputs) != len(program.inputs):
        raise EvaluationError(f"program {program.name!r} takes {len(program.inputs)} input(s), got {len(inputs)}")
    env = _Env({i.name: v for i, v in zip(program.inputs, inputs)}, params, observer, device)
    for definition in program.defs:
        env.scope.append(definition.name)
        value = env.eval(definition.term)
        env.scope.pop()
        env.values[definition.name] = Named(definition.name, value) if isinstance(value, Closure) else value
    results = tuple(env.eval(o.ref) for o in program.outputs)
    return results[0] if len(results) == 1 else results


def evaluate_term(term: Term, *args: Any, values: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None) -> Any:
    """Evaluate a closed term and apply it to `args` (used to test combinator laws)."""
    env = _Env(dict(values or {}), params or {})
    return env.apply(env.eval(term), list(args))
