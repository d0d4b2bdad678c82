"""`bwsk-compile MODEL --check-classification`: confirm every S/K verdict on the model's operators numerically.

Each distinct rule application (operator, operand shapes, static arguments, the
operand judged) is checked once with `bwsk.injectivity_check.check`: an S claim
by a full-rank Jacobian or an explicit inverse, a K claim by a witness. Operands
too large for a Jacobian are skipped and counted (compile with --tiny to check
every one).
"""

from __future__ import annotations

import math
import sys
from typing import TextIO

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bwsk.dataflow import iter_tensor_infos, trace
from bwsk.injectivity_check import check
from bwsk.passes.classify import GETITEM, judgements, read_outputs
from bwsk.program import Program

MAX_CHECKED_ELEMENTS = 4096


def _check_call(flow, call, read, seen, rows, failures: int, skipped: int, unknown: int) -> tuple[int, int, int]:
    """Check the not-yet-seen rule applications of one call; returns the updated counters."""
    if call.target == GETITEM:
        return failures, skipped, unknown
    for j in judgements(flow, call, read):
        key = repr((call.target, call.args, call.kwargs, j.varying, j.item, j.outputs))
        if key in seen:
            continue
        seen.add(key)
        if j.verdict.kind == "unknown":
            unknown += 1
            rows.append((call.target, "unknown", j.verdict.reason, "no rule: reported, not guessed", "-"))
            continue
        largest = max((math.prod(t.shape) for t in iter_tensor_infos((call.args, call.kwargs))), default=0)
        if largest > MAX_CHECKED_ELEMENTS:
            skipped += 1
            continue
        result = check(call.target, call.args, call.kwargs, j.varying, j.verdict, varying_item=j.item, outputs=j.outputs)
        failures += not result.ok
        rows.append((call.target, j.verdict.kind, j.verdict.reason, result.evidence, "ok" if result.ok else "FAILED"))
    return failures, skipped, unknown


def check_program(program: Program, stream: TextIO) -> int:
    """Check every distinct rule application in `program`; print a table; return the number of failures."""
    flow = trace(program)
    read = read_outputs(flow)
    seen: set[str] = set()
    rows: list[tuple[str, str, str, str, str]] = []
    failures = skipped = unknown = 0
    progress = Progress(console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=True)
    with progress:
        for call in progress.track(flow.calls, description="checking verdicts"):
            failures, skipped, unknown = _check_call(flow, call, read, seen, rows, failures, skipped, unknown)
    console = Console(file=stream, width=160, soft_wrap=False)

    table = Table(title=f"{program.name}: numerical check of each S/K verdict")
    for column in ("operator", "class", "reason", "evidence", "check"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    checked = len(rows) - unknown
    console.print(
        f"{checked} verdict(s) checked, {failures} failed, {unknown} unknown, "
        f"{skipped} skipped as too large (>{MAX_CHECKED_ELEMENTS} elements; compile with --tiny to check them)"
    )
    return failures
