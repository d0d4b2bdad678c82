"""`classify`: every primitive call is S (injective in what it transforms) or K (erasing), with a reason.

A call is judged in each operand that carries an activation, given its other
operands (weights and constants are "other operands"): K if it erases in any of
them, unknown if a rule cannot tell, else S (conditional when a rule says so,
e.g. "weight is invertible"). Calls on weights alone are judged in their first
tensor operand. A multi-output call is judged on the outputs the program reads,
so dropping results erases them. Summaries give the S share by call count, by
FLOPs and by activation bytes, overall and per layer.

The verdicts are then made sound for whole S-phases (`composite`): a call whose
activation operands are computed from one value through S calls is S only as
part of a composite proved injective (rotary embedding, x + c*x^3), else K.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from bwsk.ir.types import TupleType
from bwsk.passes.analysis import Analysis, Classification, Pass
from bwsk.passes.classify.composite import Composite, judge_composites
from bwsk.passes.classify.conditions import check_conditions
from bwsk.passes.classify.rules import GETITEM, Verdict
from bwsk.passes.classify.rules import classify as judge
from bwsk.passes.dataflow import Call, Dataflow


@dataclass(frozen=True)
class Share:
    """S share of a set of calls by count, by FLOPs and by output bytes (activations only)."""

    calls: int
    s_calls: int
    flops: int
    s_flops: int
    bytes: int
    s_bytes: int

    @staticmethod
    def ratio(part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    @property
    def by_ops(self) -> float:
        return self.ratio(self.s_calls, self.calls)

    @property
    def by_flops(self) -> float:
        return self.ratio(self.s_flops, self.flops)

    @property
    def by_bytes(self) -> float:
        return self.ratio(self.s_bytes, self.bytes)


@dataclass(frozen=True)
class ClassifyResult:
    classes: dict[int, Classification]
    overall: Share
    per_layer: dict[str, Share]
    unknown_targets: tuple[str, ...]
    composites: tuple[Composite, ...] = ()  # injective as a whole: `partition` keeps each in one phase


def read_outputs(flow: Dataflow) -> dict[int, set[int]]:
    """For each tuple-valued value, the indices `operator.getitem` reads from it."""
    read: dict[int, set[int]] = defaultdict(set)
    for call in flow.calls:
        if call.target == GETITEM and call.inputs:
            read[call.inputs[0]].add(call.args[1])
    return read


@dataclass(frozen=True)
class Judgement:
    """One rule application: `call` judged in operand `operand` (= `args[varying]`, item `item`)."""

    operand: int
    varying: int
    item: int | None
    outputs: tuple[int, ...] | None
    verdict: Verdict


def judgements(flow: Dataflow, call: Call, read: dict[int, set[int]]) -> list[Judgement]:
    """The rule applications behind a call's verdict: one per activation operand (or the first operand)."""
    operands = flow.activation_operands(call) or ([0] if call.inputs else [])
    outputs = None
    if isinstance(flow.values[call.output].type, TupleType):
        outputs = tuple(sorted(read.get(call.output, set()))) or None
    found = []
    for operand in operands:
        position = call.operand_positions[operand]
        varying = position if position < len(call.args) else 0
        in_list = varying < len(call.args) and isinstance(call.args[varying], list)
        item = sum(1 for p in call.operand_positions[:operand] if p == position) if in_list else None
        verdict = judge(call.target, call.args, call.kwargs, varying, varying_item=item, outputs=outputs)
        found.append(Judgement(operand, varying, item, outputs, verdict))
    return found


def classify_call(flow: Dataflow, call: Call, read: dict[int, set[int]]) -> Classification:
    """K if the call erases in any activation operand, unknown if a rule cannot tell, else S."""
    if call.target == GETITEM:  # judged on the item it selects; the producer is judged on every item read
        verdict = judge(GETITEM, call.args, call.kwargs, 0, varying_item=call.args[1])
        return Classification(verdict.kind, verdict.reason, verdict.condition, 0)
    found = judgements(flow, call, read)
    if not found:
        verdict = judge(call.target, call.args, call.kwargs, 0)
        if verdict.kind == "unknown":
            return Classification("S", "constant: no tensor operand", None, None)
        return Classification(verdict.kind, verdict.reason, verdict.condition, None)
    for kind in ("K", "unknown"):
        for j in found:
            if j.verdict.kind == kind:
                return Classification(kind, j.verdict.reason, j.verdict.condition, j.operand)
    reason = "; ".join(dict.fromkeys(j.verdict.reason for j in found))
    condition = "; ".join(dict.fromkeys(j.verdict.condition for j in found if j.verdict.condition)) or None
    return Classification("S", reason, condition, found[0].operand)


def share_of(calls: list[Call], classes: dict[int, Classification], flow: Dataflow) -> Share:
    """The S share of `calls` under the verdicts `classes`."""
    total = [0, 0, 0, 0, 0, 0]
    for call in calls:
        is_s = classes[call.index].kind == "S"
        nbytes = flow.values[call.output].nbytes if flow.values[call.output].activation else 0
        for slot, amount in ((0, 1), (2, call.flops), (4, nbytes)):
            total[slot] += amount
            total[slot + 1] += amount if is_s else 0
    return Share(*total)


def _checked_conditions(analysis: Analysis, classes: dict[int, Classification]) -> dict[int, Classification]:
    """Conditional S verdicts checked on the actual weights: kept with evidence, or K when the condition fails."""
    flow = analysis.flow
    varying = {
        index: flow.calls[index].operand_positions[verdict.operand]
        for index, verdict in classes.items()
        if verdict.kind == "S"
        and verdict.condition
        and verdict.operand is not None
        and flow.activation_operands(flow.calls[index]) == [verdict.operand]  # the rest are weights or constants
    }
    checks = check_conditions(analysis.program, flow, varying, analysis.weights, analysis.sizes)
    updated = {}
    for index, check in checks.items():
        verdict = classes[index]
        if check.holds:
            updated[index] = replace(verdict, checked=check.evidence)
        else:
            reason = f"the condition fails for these weights ({check.evidence}): {verdict.condition}; {verdict.reason}"
            updated[index] = Classification("K", reason, None, verdict.operand, check.evidence)
    return updated


class Classify(Pass[ClassifyResult]):
    name = "classify"
    summary = "S/K verdict with a reason for every primitive call"

    def run(self, analysis: Analysis) -> ClassifyResult:
        flow = analysis.flow
        read = read_outputs(flow)
        classes = {call.index: classify_call(flow, call, read) for call in flow.calls}
        if analysis.weights is not None:
            classes.update(_checked_conditions(analysis, classes))
        classes, composites = judge_composites(flow, classes)
        layers: dict[str, list[Call]] = defaultdict(list)
        for call in flow.calls:
            layers[analysis.layer(call)].append(call)
        unknown = tuple(sorted({c.target for c in flow.calls if classes[c.index].kind == "unknown"}))
        return ClassifyResult(
            classes,
            share_of(flow.calls, classes, flow),
            {layer: share_of(calls, classes, flow) for layer, calls in layers.items()},
            unknown,
            tuple(composites),
        )
