"""Measure how far the injectivity rules cover Core ATen and write the table into docs/analysis.md.

    python benchmarks/coverage.py [--doc docs/analysis.md]

Per Core ATen operator: whether it has a rule, and on torch's OpInfo sample inputs how many
operand verdicts were S (confirmed by the oracle), K (confirmed by a witness), unknown (with
the rule's reason), or not confirmed. The table replaces the section "core-aten-coverage"
of the document (appended when it has none). Needs `expecttest`.
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter, defaultdict
from pathlib import Path

from bwsk.atomic import write_atomic
from bwsk.passes.classify.coverage import Sample, core_targets, judge_samples, sample_calls
from bwsk.passes.classify.rules import covered_targets
from bwsk.render.markdown import replace_section

SECTION = "core-aten-coverage"


def coverage_table(samples: list[Sample]) -> str:
    """The markdown section: totals, then the operators with unknown or unconfirmed verdicts and why."""
    core, covered = core_targets(), covered_targets()
    by_target: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_target[s.target].append(s)
    kinds = Counter()
    for s in samples:
        conditional = s.verdict.kind == "S" and s.verdict.condition
        kinds["conditional S" if conditional else s.verdict.kind] += 1
    confirmed = sum(s.confirmed is True for s in samples)
    judged = sum(s.verdict.kind in ("S", "K") for s in samples)
    lines = [
        "## Coverage of Core ATen",
        "",
        f"torch {__import__('torch').__version__} tags {len(core)} operators `core`; {sum(t in covered for t in core)} "
        f"have an S/K rule. On torch's own OpInfo sample inputs ({len(by_target)} of them reached by a sample, "
        f"{len(samples)} operand verdicts): {kinds['S']} S, {kinds['conditional S']} conditional S, {kinds['K']} K, "
        f"{kinds['unknown']} unknown; {confirmed} of the {judged} S/K verdicts confirmed by the numerical oracle "
        "(S: full-rank Jacobian and no collision; K: a witness), "
        f"{sum(s.confirmed is None and s.verdict.kind != 'unknown' for s in samples)} undecided (the op rejects "
        "random operands, e.g. out-of-range ids).",
        "",
        "| operator | verdicts on samples (S / K / unknown) | unknown or unconfirmed: why |",
        "|---|---|---|",
    ]
    for target in core:
        found = by_target.get(target, [])
        counts = Counter(s.verdict.kind for s in found)
        notes = sorted(
            {s.verdict.reason for s in found if s.verdict.kind == "unknown"}
            | {f"not confirmed: {s.verdict.reason}" for s in found if s.confirmed is False}
        )
        if target not in covered:
            notes = ["no rule"]
        if not found and target in covered:
            notes = ["no OpInfo sample reaches it (checked by the hand-written cases in tests/passes)"]
        if counts["unknown"] or notes:
            cells = f"{counts['S']} / {counts['K']} / {counts['unknown']}" if found else "-"
            lines.append(f"| `{target}` | {cells} | {'; '.join(n.replace('|', '/') for n in notes)} |")
    lines.append("")
    lines.append("Operators not listed have an S/K verdict on every sample, each confirmed by the oracle.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default="docs/analysis.md", type=Path)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = coverage_table(judge_samples(sample_calls()))
    write_atomic(str(args.doc), replace_section(args.doc.read_text(), SECTION, table, "benchmarks/coverage.py"), force=True)
    print(table)


if __name__ == "__main__":
    main()
