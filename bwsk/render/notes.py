"""What a pass found, as comment lines above the definitions it concerns (`bwsk-compile --print-after PASS`).

Each function maps definition names to lines, in program order and without repeats;
`print_program(program, notes)` writes them as `# ...` comments, so the text still parses.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

from bwsk.passes.analysis import Analysis, Pass
from bwsk.passes.classify import Classify
from bwsk.passes.coordinate import Coordinate
from bwsk.passes.couple import Couple
from bwsk.passes.memory import Memory
from bwsk.passes.partition import Partition
from bwsk.passes.seams import Seams

Notes = dict[str, list[str]]


def classify_notes(analysis: Analysis) -> Notes:
    """Each distinct verdict of a definition's calls, once per operator."""
    notes: Notes = defaultdict(list)
    seen: set[tuple[str, str, str]] = set()
    for call in analysis.calls:
        verdict = analysis.classes[call.index]
        line = f"classify: {call.target} {verdict.kind}: {verdict.reason}" + (f" [if {verdict.condition}]" if verdict.condition else "")
        if (call.scope, call.target, line) not in seen:
            seen.add((call.scope, call.target, line))
            notes[call.scope].append(line)
    return notes


def partition_notes(analysis: Analysis) -> Notes:
    """Each phase, above the definition most of its calls ran in."""
    notes: Notes = defaultdict(list)
    for phase in analysis.result(Partition).phases:
        scope = Counter(analysis.calls[c].scope for c in phase.calls).most_common(1)[0][0]
        label = "S-phase" if phase.kind == "S" else "K-barrier"
        notes[scope].append(f"partition: {label} {phase.id}: {len(phase.calls)} call(s), {len(phase.inputs)} in, {len(phase.outputs)} out")
    return notes


def couple_notes(analysis: Analysis) -> Notes:
    """Each coupling candidate, above the residual that closes it."""
    notes: Notes = defaultdict(list)
    for coupling in analysis.result(Couple):
        notes[coupling.residuals[-1]].append(
            f"couple: {coupling.kind} candidate F = {coupling.f[:80]}, G = {coupling.g[:80]}; "
            f"F and G produce {coupling.activation_bytes:,} activation bytes, rebuilding them costs {coupling.rebuild_flops:,} FLOPs"
        )
    return notes


def memory_notes(analysis: Analysis) -> Notes:
    """The totals per mode above the first definition, then each unit's decision above the definition that makes it."""
    result = analysis.result(Memory)
    notes: Notes = defaultdict(list)
    if analysis.program.defs:
        totals = ", ".join(f"{mode} {total.total:,} B" for mode, total in result.modes.items())
        notes[analysis.program.defs[0].name].append(f"memory: activation bytes for backward: {totals}")
    for d in result.decisions:
        shape = f"{d.type}, " if d.type else ""
        notes[analysis.calls[d.call].scope].append(f"memory: {d.decision} {d.name} ({shape}{d.bytes:,} B): {d.reason}")
    return notes


def coordinate_notes(analysis: Analysis) -> Notes:
    """Each axis a call mixes or moves, and what sharding along it costs forward and backward."""
    result = analysis.result(Coordinate)
    notes: Notes = defaultdict(list)
    for call in analysis.calls:
        record = result.calls[call.index]
        for name, why in record.reasons.items():
            kind, back = record.needs_comm.get(name), record.backward_comm.get(name)
            cost = f"{name}-sharding needs {kind}" if kind else f"local under {name}-sharding"
            cost += f", {back} in backward" if back else ""
            line = f"coordinate: {call.target} {'mixes' if name in record.mixes else 'moves'} {name} ({why}) -> {cost}"
            if line not in notes[call.scope]:
                notes[call.scope].append(line)
    return notes


def seams_notes(analysis: Analysis) -> Notes:
    """Each seam's kernel pattern, above the residual that closes its coupling block."""
    by_block = defaultdict(list)
    for seam in analysis.result(Seams):
        by_block[seam.block].append(seam)
    notes: Notes = defaultdict(list)
    for coupling in analysis.result(Couple):
        for seam in by_block[coupling.layer]:
            notes[coupling.residuals[-1]].append(f"seams: {seam.stream} -> {seam.pattern.name} (weight {seam.weight}, bias {seam.bias})")
    return notes


NOTES: dict[type[Pass], Callable[[Analysis], Notes]] = {
    Classify: classify_notes,
    Partition: partition_notes,
    Couple: couple_notes,
    Memory: memory_notes,
    Coordinate: coordinate_notes,
    Seams: seams_notes,
}


def notes_after(kind: type[Pass], analysis: Analysis) -> Notes:
    """The notes of pass `kind` on `analysis` (none for a pass that annotates nothing)."""
    annotate = NOTES.get(kind)
    return annotate(analysis) if annotate else {}
