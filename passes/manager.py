"""Runs a pipeline of passes: completes it with required passes, verifies after each, names the one that fails."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from bwsk.passes.analysis import Analysis
from bwsk.passes.registry import lookup

from bwsk.errors import BwskError
from bwsk.ir.printer import print_program
from bwsk.ir.verifier import verify


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

    After every pass the program is verified; `print_after` names passes after which
    the program is printed, annotated with that pass's notes, to `stream`.
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        print_after: Iterable[str] = (),
        stream: TextIO | None = None,
    ):
        self.pipeline = complete(names)
        self.options = dict(options or {})
        self.print_after = set(print_after)
        unknown = self.print_after - set(self.pipeline)
        if unknown:
            raise BwskError(f"--print-after {sorted(unknown)[0]}: that pass is not in the pipeline ({', '.join(self.pipeline)})")
        self.stream = stream or sys.stderr

    def run(self, analysis: Analysis) -> Analysis:
        for name in self.pipeline:
            instance = lookup(name)(**self.options.get(name, {}))
            try:
                analysis.results[name] = instance.run(analysis)
                verify(analysis.program)
            except BwskError as error:
                raise PassError(f"pass {name!r} failed: {error.message}") from error
            except Exception as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise PassError(f"pass {name!r} failed: {type(error).__name__}: {first}") from error
            if name in self.print_after:
                self.stream.write(f"# ---- after pass {name} ----\n")
                self.stream.write(print_program(analysis.program, instance.notes(analysis)))
        return analysis
