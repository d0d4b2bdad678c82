"""`bwsk-compile MODEL --check-classification`: confirm every S/K verdict on the model's operators numerically.

Each distinct rule application (operator, operand shapes, static arguments, the
operand judged) is checked once with `bwsk.passes.classify.oracle.check`: an S claim
by a full-rank Jacobian or an explicit inverse, a K claim by a witness. Operands
too large for a Jacobian are skipped and counted (compile with --tiny to check
every one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch

from bwsk.ir.program import Program
from bwsk.ir.types import TensorType, TupleType, Type
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify import GETITEM, Judgement, judgements, read_outputs
from bwsk.passes.classify.oracle import check
from bwsk.passes.classify.oracle_jacobian import MAX_JACOBIAN_COLUMNS
from bwsk.passes.classify.phase_check import MAX_JACOBIAN_ENTRIES, PhaseCheck, check_phases
from bwsk.passes.dataflow import Call, Dataflow, iter_tensor_infos, trace
from bwsk.passes.manager import PassManager

MAX_CHECKED_ELEMENTS = 4096


def _row(call: Call, judgement: Judgement, produced: int) -> tuple[str, str, str, str, str]:
    """One table row: operator, class, reason, evidence, outcome ("ok", "FAILED", "undecided", "unknown" or "skipped").

    `produced` is the number of elements the call outputs: with the operand's, it bounds the Jacobian's size.
    """
    verdict = judgement.verdict
    if verdict.kind == "unknown":
        return (call.target, "unknown", verdict.reason, "no rule: reported, not guessed", "unknown")
    largest = max((math.prod(t.shape) for t in iter_tensor_infos((call.args, call.kwargs))), default=0)
    if largest > MAX_CHECKED_ELEMENTS:
        return (call.target, verdict.kind, verdict.reason, f"an operand has {largest:,} elements", "skipped")
    columns = largest if verdict.kind == "K" else min(largest, MAX_JACOBIAN_COLUMNS)  # the oracle's, at the most
    if columns * produced > MAX_JACOBIAN_ENTRIES:  # an expand: small operands, a huge output
        return (call.target, verdict.kind, verdict.reason, f"the output has {produced:,} elements", "skipped")
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


@dataclass(frozen=True)
class ClassificationCheck:
    """Every distinct rule application's check (`verdicts`: operator, class, reason, evidence, outcome) and
    every S-phase's check as one function (`phases`)."""

    program: str
    verdicts: list[tuple[str, str, str, str, str]]
    phases: list[PhaseCheck]

    @property
    def failures(self) -> int:
        return sum(row[-1] == "FAILED" for row in self.verdicts) + sum(c.outcome == "FAILED" for c in self.phases)


def check_verdicts(flow: Dataflow, track: Callable[[list[Call]], Iterable[Call]] = iter) -> list[tuple[str, str, str, str, str]]:
    """One row per distinct rule application (see `_row`); `track` wraps the calls (a progress bar, say)."""
    return [_row(call, judgement, _elements(flow.values[call.output].type)) for call, judgement in _distinct(flow, track(flow.calls))]


def _elements(type_: Type) -> int:
    if isinstance(type_, TupleType):
        return sum(_elements(item) for item in type_.items)
    return math.prod(type_.shape) if isinstance(type_, TensorType) else 0


def check_classification(
    program: Program, weights: Mapping[str, torch.Tensor] | None = None, track: Callable[[list[Call]], Iterable[Call]] = iter
) -> ClassificationCheck:
    """Check every distinct rule application in `program`, then every S-phase as a whole.

    `weights` (state tensors by @name) are what the S-phases are run with: a model's own buffers and
    constants (scales, masks, position tables) must not be replaced by random values.
    """
    flow = trace(program)
    flow.require_cpu_budget(weights or {}, "--check-classification")
    verdicts = check_verdicts(flow, track)
    phases = check_phases(PassManager(["partition"]).run(Analysis.of(program, weights=weights)))
    return ClassificationCheck(program.name, verdicts, phases)
