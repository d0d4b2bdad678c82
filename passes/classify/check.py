"""`bwsk-compile MODEL --check-classification`: confirm every S/K verdict on the model's operators numerically.

Each distinct rule application (operator, operand shapes, static arguments, the
operand judged) is checked once with `bwsk.passes.classify.oracle.check`: an S claim
by a full-rank Jacobian or an explicit inverse, a K claim by a witness. Operands
too large for a Jacobian are skipped and counted (compile with --tiny to check
every one).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TextIO

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bwsk.ir.program import Program
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify import GETITEM, Judgement, judgements, read_outputs
from bwsk.passes.classify.oracle import check
from bwsk.passes.classify.phase_check import check_phases
from bwsk.passes.dataflow import Call, Dataflow, iter_tensor_infos, trace
from bwsk.passes.manager import PassManager

MAX_CHECKED_ELEMENTS = 4096


def _row(call: Call, judgement: Judgement) -> tuple[str, str, str, str, str]:
    """One table row: operator, class, reason, evidence, outcome ("ok", "FAILED", "undecided", "unknown" or "skipped")."""
    verdict = judgement.verdict
    if verdict.kind == "unknown":
        return (call.target, "unknown", verdict.reason, "no rule: reported, not guessed", "unknown")
    largest = max((math.prod(t.shape) for t in iter_tensor_infos((call.args, call.kwargs))), default=0)
    if largest > MAX_CHECKED_ELEMENTS:
        return (call.target, verdict.kind, verdict.reason, f"an operand has {largest:,} elements", "skipped")
    result = check(call.target, call.args, call.kwargs, judgement.varying, verdict, varying_item=judgement.item, outputs=judgement.outputs)
    outcome = "undecided" if not result.decided else "ok" if result.ok else "FAILED"
    return (call.target, verdict.kind, verdict.reason, result.evidence, outcome)


def _distinct(flow: Dataflow, calls: Iterable[Call]) -> Iterator[tuple[Call, Judgement]]:
    """Each rule application once: same operator, operand types, static arguments and judged operand."""
    read = read_outputs(flow)
    seen: set[str] = set()
    for call in calls:
        if call.target == GETITEM:
            continue
        for judgement in judgements(flow, call, read):
            key = repr((call.target, call.args, call.kwargs, judgement.varying, judgement.item, judgement.outputs))
            if key not in seen:
                seen.add(key)
                yield call, judgement


def check_verdicts(flow: Dataflow) -> list[tuple[str, str, str, str, str]]:
    """One row per distinct rule application (see `_row`), with a progress bar on a terminal."""
    progress = Progress(console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=True)
    with progress:
        calls = progress.track(flow.calls, description="checking verdicts")
        return [_row(call, judgement) for call, judgement in _distinct(flow, calls)]


def check_program(program: Program, stream: TextIO, weights: Mapping[str, torch.Tensor] | None = None) -> int:
    """Check every distinct rule application in `program`; print a table; return the number of failures.

    `weights` (state tensors by @name) are what the S-phases are run with: a model's own buffers and
    constants (scales, masks, position tables) must not be replaced by random values.
    """
    rows = check_verdicts(trace(program))
    outcomes = Counter(row[-1] for row in rows)
    table = Table(title=f"{program.name}: numerical check of each S/K verdict")
    for column in ("operator", "class", "reason", "evidence", "check"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if row[-1] != "skipped":
            table.add_row(*row)
    console = Console(file=stream, width=160, soft_wrap=False)
    console.print(table)
    console.print(
        f"{outcomes['ok'] + outcomes['FAILED']} verdict(s) checked, {outcomes['FAILED']} failed, {outcomes['undecided']} undecided, "
        f"{outcomes['unknown']} unknown, "
        f"{outcomes['skipped']} skipped as too large (>{MAX_CHECKED_ELEMENTS} elements; compile with --tiny to check them)"
    )
    return outcomes["FAILED"] + _print_phases(program, console, weights)


def _print_phases(program: Program, console: Console, weights: Mapping[str, torch.Tensor] | None) -> int:
    """The phases section: every S-phase checked as one function of each activation input; the number of failures."""
    checks = check_phases(PassManager(["partition"]).run(Analysis.of(program, weights=weights)))
    table = Table(title=f"{program.name}: numerical check of each S-phase as a whole")
    for column in ("phase", "layer", "calls", "input", "evidence", "check"):
        table.add_column(column, overflow="fold")
    for c in checks:
        if c.outcome != "skipped":
            table.add_row(str(c.phase), c.layer, str(c.calls), c.input, c.evidence, c.outcome)
    outcomes = Counter(c.outcome for c in checks)
    console.print(table)
    console.print(
        f"{outcomes['ok'] + outcomes['FAILED']} S-phase input(s) checked, {outcomes['FAILED']} failed, {outcomes['undecided']} undecided, "
        f"{outcomes['skipped']} skipped (integer inputs, or too large: compile with --tiny to check them)"
    )
    return outcomes["FAILED"]
