"""Every pass by name, and the manager that runs a pipeline of them.

The manager completes a pipeline with the passes it requires, verifies the program
after each pass that replaces it, and names the pass that fails. It never prints: a
driver that wants to show the program after a pass (`--print-after`) passes an
`after_pass` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bwsk.errors import BwskError, first_line
from bwsk.ir.verifier import verify
from bwsk.passes.analysis import Analysis, Pass
from bwsk.passes.classify import Classify
from bwsk.passes.coordinate import Coordinate
from bwsk.passes.couple import Couple
from bwsk.passes.memory import Memory
from bwsk.passes.partition import Partition
from bwsk.passes.seams import Seams

PASSES: dict[str, type[Pass]] = {cls.name: cls for cls in (Classify, Partition, Couple, Memory, Coordinate, Seams)}

AfterPass = Callable[[type[Pass], Analysis], None]


class PassError(BwskError):
    """A pass raised or left an invalid program; the message names the pass."""


def lookup(name: str) -> type[Pass]:
    if name not in PASSES:
        raise BwskError(f"unknown pass {name!r} (known: {', '.join(sorted(PASSES))})")
    return PASSES[name]


def complete(passes: Iterable[str | type[Pass]]) -> list[type[Pass]]:
    """`passes` (by name or class) with every required pass added before its first user, each once, order kept."""
    pipeline: list[type[Pass]] = []

    def add(cls: type[Pass], chain: tuple[str, ...]) -> None:
        if cls in pipeline:
            return
        if cls.name in chain:
            raise BwskError(f"passes require each other in a cycle: {' -> '.join(chain + (cls.name,))}")
        for required in cls.requires:
            add(lookup(required), chain + (cls.name,))
        pipeline.append(cls)

    for entry in passes:
        add(lookup(entry) if isinstance(entry, str) else entry, ())
    return pipeline


class PassManager:
    """Runs `passes` (by name or class, completed with their requirements) on an Analysis.

    A pass that replaces the program is followed by the verifier; one that only adds a
    result costs no verification. `after_pass(pass, analysis)` runs after each pass.
    """

    def __init__(self, passes: Iterable[str | type[Pass]]):
        self.pipeline = complete(passes)

    def run(self, analysis: Analysis, after_pass: AfterPass | None = None) -> Analysis:
        for cls in self.pipeline:
            before = analysis.program
            try:
                analysis.results[cls] = cls().run(analysis)
                if analysis.program is not before:
                    verify(analysis.program)
            except BwskError as error:
                raise PassError(f"pass {cls.name!r} failed: {error.message}") from error
            except Exception as error:
                raise PassError(f"pass {cls.name!r} failed: {first_line(error)}") from error
            if after_pass is not None:
                after_pass(cls, analysis)
        return analysis
