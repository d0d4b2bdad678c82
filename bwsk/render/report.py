"""Analysis -> JSON (schema: docs/analysis.schema.json) and rich tables (`--emit phases`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from bwsk.passes.analysis import Analysis
from bwsk.passes.classify import Classify
from bwsk.passes.coordinate import AXES, Coordinate, CoordinateResult
from bwsk.passes.couple import Couple, Coupling
from bwsk.passes.memory import Memory, MemoryResult
from bwsk.passes.partition import Partition
from bwsk.render.units import human_bytes

SCHEMA_VERSION = 1


def op_names(analysis: Analysis) -> dict[int, str]:
    """A readable unique name per call: `<definition>#<k>`, the k-th call made while evaluating it."""
    seen: Counter[str] = Counter()
    names = {}
    for call in analysis.calls:
        names[call.index] = f"{call.scope}#{seen[call.scope]}"
        seen[call.scope] += 1
    return names


def _shape(analysis: Analysis, value: int) -> str:
    return str(analysis.flow.values[value].type)


def _share_json(share) -> dict[str, Any]:
    return {
        "ops": share.calls,
        "s_ops": share.s_calls,
        "s_ratio_ops": share.by_ops,
        "flops": share.flops,
        "s_ratio_flops": share.by_flops,
        "bytes": share.bytes,
        "s_ratio_bytes": share.by_bytes,
    }


def couplings_json(couplings: list[Coupling]) -> list[dict[str, Any]]:
    return [asdict(c) for c in couplings]


def memory_json(result: MemoryResult) -> dict[str, Any]:
    return {
        "modes": {name: asdict(total) for name, total in result.modes.items()},
        "decisions": [asdict(d) for d in result.decisions],
        "layers": [asdict(layer) for layer in result.layers],
        "inexact": list(result.inexact),
    }


def coordination_json(result: CoordinateResult) -> dict[str, Any]:
    """The summaries, and the records of the calls that mix an axis or communicate (the others are omitted)."""
    return {
        "axes": list(AXES),
        "inputs": {name: list(axes) for name, axes in result.inputs.items()},
        "summary": result.summary,
        "unknown": list(result.unknown_targets),
        "calls": [
            {"index": i, **asdict(r), "mixes": list(r.mixes)}
            for i, r in sorted(result.calls.items())
            if r.mixes or r.needs_comm or r.backward_comm
        ],
    }


def analysis_json(analysis: Analysis) -> dict[str, Any]:
    """Everything the passes found, as plain JSON types (results of passes not run are omitted)."""
    flow = analysis.flow
    names = op_names(analysis)
    classify = analysis.get(Classify)
    partition = analysis.get(Partition)
    ops = []
    for call in analysis.calls:
        verdict = classify.classes[call.index] if classify else None
        output = flow.values[call.output]
        ops.append(
            {
                "name": names[call.index],
                "target": call.target,
                "class": verdict.kind if verdict else None,
                "reason": verdict.reason if verdict else None,
                "condition": verdict.condition if verdict else None,
                "checked": verdict.checked if verdict else None,
                "module_path": call.module,
                "layer": analysis.layer(call),
                "flops": call.flops,
                "bytes": output.nbytes,
                "activation": output.activation,
                "output_type": str(output.type),
                "input_types": [_shape(analysis, v) for v in call.inputs],
                "phase": partition.phase_of[call.index] if partition else None,
            }
        )
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "program": analysis.program.name,
        "level": analysis.program.attr("level"),
        "ops": ops,
    }
    summary: dict[str, Any] = {}
    if classify:
        summary.update(_share_json(classify.overall))
        summary["per_layer"] = {layer: _share_json(share) for layer, share in classify.per_layer.items()}
        summary["unknown_targets"] = list(classify.unknown_targets)
    if partition:
        document["phases"] = [
            {
                "id": phase.id,
                "kind": phase.kind,
                "layer": phase.layer,
                "ops": [names[c] for c in phase.calls],
                "inputs": [{"value": v, "type": _shape(analysis, v), "bytes": flow.values[v].nbytes} for v in phase.inputs],
                "outputs": [{"value": v, "type": _shape(analysis, v), "bytes": flow.values[v].nbytes} for v in phase.outputs],
            }
            for phase in partition.phases
        ]
        summary["phases_per_layer"] = {layer: {"S": c["S"], "K": c["K"]} for layer, c in partition.per_layer().items()}
    if (couplings := analysis.get(Couple)) is not None:
        summary["couplings"] = couplings_json(couplings)
    if (memory := analysis.get(Memory)) is not None:
        summary["memory"] = memory_json(memory)
    if (coordination := analysis.get(Coordinate)) is not None:
        summary["coordination"] = coordination_json(coordination)
    document["summary"] = summary
    return document


def share_line(analysis: Analysis) -> str:
    """The S share of the whole program by calls, FLOPs and activation bytes."""
    overall = analysis.result(Classify).overall
    return (
        f"{analysis.program.name}: {overall.calls} primitive calls; S share "
        f"{overall.by_ops:.1%} by ops, {overall.by_flops:.1%} by FLOPs, {overall.by_bytes:.1%} by activation bytes"
    )


def finding_lines(analysis: Analysis) -> list[str]:
    """One line each for the couple, memory and coordinate passes that ran."""
    lines = []
    if (couplings := analysis.get(Couple)) is not None:
        kinds = Counter(c.kind for c in couplings)
        produced = sum(c.activation_bytes for c in couplings)
        lines.append(
            f"coupling candidates: {len(couplings)} ({', '.join(f'{n} {k}' for k, n in kinds.items()) or 'none'}); "
            f"F and G produce {human_bytes(produced)} of activations, which reversible blocks rebuild in backward instead of keeping "
            "what autograd saves of them (see the memory plan)"
        )
    if (memory := analysis.get(Memory)) is not None:
        modes = memory.modes
        conventional = modes["conventional"].total or 1
        lines.append(
            "predicted activation memory: "
            + ", ".join(f"{mode} {human_bytes(m.total)} ({m.total / conventional:.0%})" for mode, m in modes.items())
        )
    if (coordination := analysis.get(Coordinate)) is not None:
        summary = coordination.summary
        lines.append(
            "communication when sharding activations: "
            + ", ".join(f"{axis} {entry['calls']} call(s) {dict(entry['kinds']) or ''}".rstrip() for axis, entry in summary.items())
        )
    return lines


def print_phases(analysis: Analysis, console: Console, *, max_phases: int = 60) -> None:
    """Rich tables: the S/K summary, phases per layer, the first phases in detail, then the other passes' findings."""
    classify = analysis.result(Classify)
    partition = analysis.result(Partition)
    console.print(share_line(analysis), highlight=False)
    layers = Table(title="per layer", show_lines=False)
    for column in ("layer", "ops", "S ops", "S FLOPs", "S bytes", "S-phases", "K-barriers"):
        layers.add_column(column, justify="right" if column != "layer" else "left")
    per_layer = partition.per_layer()
    for layer, share in classify.per_layer.items():
        counts = per_layer.get(layer, Counter())
        layers.add_row(
            layer,
            str(share.calls),
            f"{share.by_ops:.0%}",
            f"{share.by_flops:.0%}",
            f"{share.by_bytes:.0%}",
            str(counts["S"]),
            str(counts["K"]),
        )
    console.print(layers)

    names = op_names(analysis)
    shown = min(max_phases, len(partition.phases))
    detail = Table(title=f"phases ({shown} of {len(partition.phases)})")
    for column in ("id", "kind", "layer", "operators", "in", "out"):
        detail.add_column(column)
    for phase in partition.phases[:max_phases]:
        targets = Counter(analysis.calls[c].target.split(".")[1] for c in phase.calls)
        ops = ", ".join(f"{t}x{n}" if n > 1 else t for t, n in targets.most_common())
        if phase.kind == "K":
            verdict = classify.classes[phase.calls[0]]
            ops = f"{names[phase.calls[0]]}: {verdict.reason}"
        inputs = human_bytes(sum(analysis.flow.values[v].nbytes for v in phase.inputs))
        outputs = human_bytes(sum(analysis.flow.values[v].nbytes for v in phase.outputs))
        style = "green" if phase.kind == "S" else "red"
        detail.add_row(str(phase.id), f"[{style}]{phase.kind}[/]", phase.layer, ops, inputs, outputs)
    console.print(detail)
    for line in finding_lines(analysis):
        console.print(line, highlight=False)
