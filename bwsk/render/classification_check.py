"""The report of `--check-classification` as rich tables: each verdict's numerical check, then each S-phase's."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from bwsk.passes.classify.check import MAX_CHECKED_ELEMENTS, ClassificationCheck


def print_classification_check(report: ClassificationCheck, console: Console) -> None:
    """Two tables (skipped rows left out) and a summary line under each."""
    table = Table(title=f"{report.program}: numerical check of each S/K verdict")
    for column in ("operator", "class", "reason", "evidence", "check"):
        table.add_column(column, overflow="fold")
    for row in report.verdicts:
        if row[-1] != "skipped":
            table.add_row(*row)
    outcomes = Counter(row[-1] for row in report.verdicts)
    console.print(table)
    console.print(
        f"{outcomes['ok'] + outcomes['FAILED']} verdict(s) checked, {outcomes['FAILED']} failed, {outcomes['undecided']} undecided, "
        f"{outcomes['unknown']} unknown, "
        f"{outcomes['skipped']} skipped as too large (>{MAX_CHECKED_ELEMENTS} elements; compile with --tiny to check them)"
    )
    phases = Table(title=f"{report.program}: numerical check of each S-phase as a whole")
    for column in ("phase", "layer", "calls", "input", "evidence", "check"):
        phases.add_column(column, overflow="fold")
    for check in report.phases:
        if check.outcome != "skipped":
            phases.add_row(str(check.phase), check.layer, str(check.calls), check.input, check.evidence, check.outcome)
    outcomes = Counter(check.outcome for check in report.phases)
    console.print(phases)
    console.print(
        f"{outcomes['ok'] + outcomes['FAILED']} S-phase input(s) checked, {outcomes['FAILED']} failed, {outcomes['undecided']} undecided, "
        f"{outcomes['skipped']} skipped (integer inputs, or too large: compile with --tiny to check them)"
    )
