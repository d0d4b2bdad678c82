"""What the analysis passes find about a program, in one object, and the Pass that adds to it.

An Analysis holds the Program, its dataflow graph (every primitive call at the
example shape) and one typed result per pass that ran: `analysis.result(Classify)`
is a `ClassifyResult`. Passes fill it; renderers (tables, JSON, DOT, SVG) read it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from bwsk.ir.program import Program
from bwsk.passes.dataflow import Call, Dataflow, trace

_LAYER = re.compile(r"^(.*?(?:^|\.)\d+)(?:\.|$)")


def layer_of(module: str) -> str:
    """The enclosing numbered block of a module path (`gpt_neox.layers.3.mlp` -> `gpt_neox.layers.3`).

    Paths without a numbered segment keep their first segment (`embed_in`, `lm_head`);
    calls outside every module belong to `<top>`.
    """
    if not module:
        return "<top>"
    match = _LAYER.match(module)
    return match.group(1) if match else module.split(".")[0]


@dataclass(frozen=True)
class Classification:
    """A call's S/K verdict: kind "S", "K" or "unknown", the reason, and the condition of a conditional S."""

    kind: str
    reason: str
    condition: str | None = None
    operand: int | None = None  # position in `call.inputs` the verdict is about (None: no tensor operand)
    checked: str | None = None  # evidence that the condition holds for the actual weights, when checked


R = TypeVar("R")


class Pass(Generic[R]):
    """One analysis step: reads the results of the passes named in `requires`, returns its own result (an R).

    A pass may also replace `analysis.program` (the PassManager then verifies it). Subclasses set
    `name` (unique: the name `--passes` and the manager know it by), `requires` and `summary`.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""

    def run(self, analysis: Analysis) -> R:
        raise NotImplementedError


@dataclass
class Analysis:
    """A program, its dataflow graph, and the result of each pass run on it.

    `results` is the PassManager's store, by pass; read it through `result` or `get`, which are
    typed by the pass.
    """

    program: Program
    flow: Dataflow
    results: dict[type[Pass], Any] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)
    weights: Mapping[str, Any] | None = None  # actual state tensors by @name, when the model has them

    @classmethod
    def of(cls, program: Program, *, sizes: Mapping[str, int] | None = None, weights: Mapping[str, Any] | None = None) -> Analysis:
        return cls(program, trace(program, sizes=sizes), sizes=dict(sizes or {}), weights=weights)

    @property
    def calls(self) -> list[Call]:
        return self.flow.calls

    def result(self, kind: type[Pass[R]]) -> R:
        """The result of pass `kind`; a KeyError names the pass to run first."""
        try:
            return self.results[kind]
        except KeyError:
            raise KeyError(f"run the {kind.name!r} pass first") from None

    def get(self, kind: type[Pass[R]]) -> R | None:
        """The result of pass `kind`, or None when it did not run."""
        return self.results.get(kind)

    @property
    def classes(self) -> dict[int, Classification]:
        """The verdict of every call, by call index (the `classify` pass's result)."""
        from bwsk.passes.classify import Classify  # the classify pass builds on this module

        return self.result(Classify).classes

    def layer(self, call: Call) -> str:
        return layer_of(call.module)
