"""A Program: typed inputs, state (parameters, buffers, constants), ordered named definitions, typed outputs.

Invariants (checked by `bwsk.ir.verifier.verify`): every name is defined once and
before use; a value used twice is named once, so the program's size is linear in
the source graph. Equality is structural (terms are hash-consed); source
positions ride along in `spans` and take no part in equality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bwsk.errors import Location
from bwsk.ir.terms import Ref, Term
from bwsk.ir.types import Type

STATE_KINDS = ("param", "buffer", "const")


@dataclass(frozen=True)
class Input:
    """A user input `%name` of a declared type."""

    name: str
    type: Type


@dataclass(frozen=True)
class State:
    """A parameter, buffer or constant `@name` (its state-dict name) of a declared type."""

    name: str
    kind: str
    type: Type


@dataclass(frozen=True)
class Definition:
    """`%name : type = term from "module.path"`; type and module are optional."""

    name: str
    term: Term
    type: Type | None = None
    module: str | None = None


@dataclass(frozen=True)
class Output:
    """A program result: a reference and its declared type."""

    ref: Ref
    type: Type


SpanKey = tuple


@dataclass(frozen=True)
class Program:
    """A whole IR program. `attrs` holds metadata such as the export level (`level`)."""

    name: str
    inputs: tuple[Input, ...] = ()
    state: tuple[State, ...] = ()
    defs: tuple[Definition, ...] = ()
    outputs: tuple[Output, ...] = ()
    attrs: tuple[tuple[str, str], ...] = ()
    spans: Mapping[SpanKey, Location] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __str__(self) -> str:
        from bwsk.ir.printer import print_program

        return print_program(self)

    def __call__(self, *inputs: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Evaluate on input values and state tensors (by state-dict name); see `bwsk.ir.evaluator`."""
        from bwsk.ir.evaluator import evaluate

        return evaluate(self, inputs, params or {})

    def attr(self, key: str, default: str | None = None) -> str | None:
        return dict(self.attrs).get(key, default)

    def definition(self, name: str) -> Definition:
        for d in self.defs:
            if d.name == name:
                return d
        raise KeyError(name)

    def with_defs(self, defs: Sequence[Definition]) -> Program:
        """The same program with other definitions (source positions are dropped)."""
        return replace(self, defs=tuple(defs), spans={})

    def locate(self, *keys: SpanKey) -> Location | None:
        """The first recorded source position among `keys`, if the program was parsed."""
        for key in keys:
            location = self.spans.get(key)
            if location is not None:
                return location
        return None
