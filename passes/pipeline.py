"""`analyze(program)`: trace a program and run the analysis passes on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bwsk.ir.program import Program
from bwsk.passes import REGISTRY, PassManager
from bwsk.passes.analysis import Analysis
from bwsk.passes.manager import AfterPass

DEFAULT_PASSES = ("classify", "partition", "couple", "memory", "coordinate")


def default_passes() -> list[str]:
    return [name for name in DEFAULT_PASSES if name in REGISTRY]


def analyze(
    program: Program,
    *,
    passes: Iterable[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    after_pass: AfterPass | None = None,
    sizes: Mapping[str, int] | None = None,
    weights: Mapping[str, Any] | None = None,
) -> Analysis:
    """Run `passes` (default: every analysis pass) on `program` at the given symbolic sizes.

    With `weights` (state tensors by @name), conditional verdicts are checked on them;
    `after_pass` is called after each pass (see `PassManager.run`).
    """
    analysis = Analysis.of(program, sizes=sizes, weights=weights)
    manager = PassManager(default_passes() if passes is None else passes, options=options)
    return manager.run(analysis, after_pass)
