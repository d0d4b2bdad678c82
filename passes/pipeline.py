"""`analyze(program)`: trace a program and run the analysis passes on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bwsk.ir.program import Program
from bwsk.passes.analysis import Analysis, Pass
from bwsk.passes.manager import AfterPass, PassManager

DEFAULT_PASSES = ("classify", "partition", "couple", "memory", "coordinate")


def analyze(
    program: Program,
    *,
    passes: Iterable[str | type[Pass]] = DEFAULT_PASSES,
    after_pass: AfterPass | None = None,
    sizes: Mapping[str, int] | None = None,
    weights: Mapping[str, Any] | None = None,
) -> Analysis:
    """Run `passes` (by name or class; default: every analysis pass) on `program` at the given symbolic sizes.

    With `weights` (state tensors by @name), conditional verdicts are checked on them;
    `after_pass` is called after each pass (see `PassManager.run`).
    """
    analysis = Analysis.of(program, sizes=sizes, weights=weights)
    return PassManager(passes).run(analysis, after_pass)
