"""Passes are small named objects with options, registered by name.

A pass reads and extends an Analysis (and may replace its program, which is then
re-verified); `requires` names the passes whose results it reads, so a pipeline
can be completed automatically. `notes` gives, per definition, comment lines
that `--print-after` shows above it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from bwsk.errors import BwskError
from bwsk.passes.analysis import Analysis

REGISTRY: dict[str, type[Pass]] = {}


class Pass:
    """Base class: subclasses set `name`, `requires`, `summary`, and implement `run`."""

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""

    def __init__(self, **options: Any):
        unknown = set(options) - set(self.options())
        if unknown:
            raise BwskError(f"pass {self.name!r} has no option {sorted(unknown)[0]!r} (options: {', '.join(self.options()) or 'none'})")
        self.config = {**self.options(), **options}

    @classmethod
    def options(cls) -> dict[str, Any]:
        """Option names and their defaults."""
        return {}

    def run(self, analysis: Analysis) -> Any:
        """Compute this pass's result (stored under `self.name` by the manager)."""
        raise NotImplementedError

    def notes(self, analysis: Analysis) -> dict[str, list[str]]:
        """Comment lines per definition name, for `--print-after`."""
        return {}


def register(cls: type[Pass]) -> type[Pass]:
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"pass name {cls.name!r} is empty or taken")
    REGISTRY[cls.name] = cls
    return cls


def lookup(name: str) -> type[Pass]:
    if name not in REGISTRY:
        raise BwskError(f"unknown pass {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def passes_by_name() -> dict[str, Callable[..., Pass]]:
    return dict(REGISTRY)
