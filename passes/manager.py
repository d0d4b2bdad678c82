"""Runs a pipeline of passes: completes it with required passes, verifies what they change, names the one that fails.

The manager never prints: a driver that wants to show the program after a pass
(`--print-after`) passes an `after_pass` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bwsk.errors import BwskError, first_line
from bwsk.ir.verifier import verify
from bwsk.passes.analysis import Analysis
from bwsk.passes.registry import Pass, lookup

AfterPass = Callable[[str, Pass, Analysis], None]


class PassError(BwskError):
    """A pass raised or left an invalid program; the message names the pass."""


def complete(names: Iterable[str]) -> list[str]:
    """`names` with every required pass added before its first user, each once, order kept."""
    pipeline: list[str] = []

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in pipeline:
            return
        if name in chain:
            raise BwskError(f"passes require each other in a cycle: {' -> '.join(chain + (name,))}")
        for required in lookup(name).requires:
            add(required, chain + (name,))
        pipeline.append(name)

    for name in names:
        add(name, ())
    return pipeline


class PassManager:
    """Runs `names` (completed with their requirements) on an Analysis.

    A pass that replaces the program is followed by the verifier; one that only adds a
    result costs no verification. `after_pass(name, instance, analysis)` runs after each pass.
    """

    def __init__(self, names: Iterable[str], *, options: Mapping[str, Mapping[str, Any]] | None = None):
        self.pipeline = complete(names)
        self.options = dict(options or {})

    def run(self, analysis: Analysis, after_pass: AfterPass | None = None) -> Analysis:
        for name in self.pipeline:
            instance = lookup(name)(**self.options.get(name, {}))
            before = analysis.program
            try:
                analysis.results[name] = instance.run(analysis)
                if analysis.program is not before:
                    verify(analysis.program)
            except BwskError as error:
                raise PassError(f"pass {name!r} failed: {error.message}") from error
            except Exception as error:
                raise PassError(f"pass {name!r} failed: {first_line(error)}") from error
            if after_pass is not None:
                after_pass(name, instance, analysis)
        return analysis
