"""Per unit of saved memory: store it, recompute it in backward, or invert it (or, outside coupled blocks, drop it).

Analyzed plan: store program inputs, K-barrier outputs and buffers, and the
inputs of S-phases; recompute what an S-phase computes from its inputs. With
couplings, the residual stream entering each coupled block is inverted from the
block's output, the block's own activations are rebuilt by running F and G
again, and outside the blocks autograd runs as in conventional training.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from bwsk.ir.types import TupleType
from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.couple import Couple
from bwsk.passes.memory.couplings import coupled_streams, definition_values
from bwsk.passes.memory.result import DROPPED, Decision
from bwsk.passes.memory.storages import Replay
from bwsk.passes.partition import Partition


class Choice(NamedTuple):
    """A decision, its reason, and the S-phase or coupled block that rebuilds the unit (None when stored)."""

    decision: str
    reason: str
    group: str | None


class Planner:
    """Decides every unit of a replay from the partition and (optionally) the `couple` result."""

    def __init__(self, analysis: Analysis, replay: Replay):
        self.flow = analysis.flow
        self.replay = replay
        partition = analysis.result(Partition)
        self.phase_of: dict[int, int] = partition.phase_of
        self.phases = {phase.id: phase for phase in partition.phases}
        self.saver: dict[int, int] = {}  # storage -> first call saving it
        self.first_reader: dict[int, int] = {}  # value -> first call reading it
        for call in self.flow.calls:
            for storage in replay.saved.get(call.index, ()):
                self.saver.setdefault(storage, call.index)
            for value in call.inputs:
                self.first_reader.setdefault(value, call.index)
        self.phase_input: dict[int, int] = {}  # storage -> first S-phase reading it from outside
        for phase in partition.phases:
            if phase.kind == "S":
                for value in phase.inputs:
                    for storage in replay.roots(value):
                        self.phase_input.setdefault(storage, phase.id)
        definitions = definition_values(analysis)
        self.names = {value: f"%{name}" for name, value in definitions.items()}
        self.streams = coupled_streams(self.flow, replay, definitions, analysis.get(Couple) or [])

    def layer(self, call: int) -> str:
        return layer_of(self.flow.calls[call].module)

    def home(self, storage: int) -> int:
        """The call that makes a storage; for a program input, the first call reading it."""
        record = self.replay.storages[storage]
        return record.producer if record.producer is not None else self.first_reader.get(record.owner, self.saver.get(storage, 0))

    def analyzed(self, storage: int) -> Choice:
        producer = self.replay.storages[storage].producer
        if producer is None:
            return Choice("store", "program input", None)
        phase = self.phases[self.phase_of[producer]]
        if phase.kind != "S":
            return Choice("store", f"K-barrier output ({self.flow.calls[producer].target})", None)
        if storage in self.phase_input:
            return Choice("store", f"input of S-phase {self.phase_input[storage]}", None)
        return Choice("recompute", f"rebuilt by S-phase {phase.id} from its inputs", f"S-phase {phase.id}")

    def reversible(self, storage: int, analyzed: Choice) -> Choice:
        """The choice with inversion; `analyzed` when nothing is coupled."""
        if storage in self.streams.invert:
            layer = self.streams.invert[storage]
            return Choice("invert", f"residual stream of coupled block {layer}: rebuilt by inverting it", f"block {layer}")
        if storage in self.streams.final:
            return Choice("store", "output of the last coupled blocks (combined from their two float64 streams, which are kept too)", None)
        producer = self.replay.storages[storage].producer
        if producer is not None and self.layer(producer) in self.streams.layers:
            return self.in_block(producer)
        if not self.streams.layers:
            return analyzed
        if storage in self.side_inputs:
            return Choice("store", "side input of the coupled stack (mask, positions): kept once for every block's rebuild", None)
        if storage in self.saver:
            return Choice("store", "saved by autograd outside the coupled blocks (which run as in conventional training)", None)
        return Choice(DROPPED, "outside the coupled blocks and not saved by autograd there", None)

    @functools.cached_property
    def side_inputs(self) -> set[int]:
        """Storages (not weights) made outside the coupled blocks and read inside them (masks, positions, rotary
        tables): the reversible Function keeps each once, as its inputs, for every block's rebuild."""
        found = set()
        for call in self.flow.calls:
            if self.layer(call.index) not in self.streams.layers:
                continue
            for value in call.inputs:
                producer = self.flow.values[value].producer
                if producer is None or self.layer(producer) not in self.streams.layers:
                    found.update(self.replay.roots(value))
        return found

    def in_block(self, call: int) -> Choice:
        layer = self.layer(call)
        return Choice("recompute", f"inside coupled block {layer}: rebuilt by running F and G again", f"block {layer}")

    def buffers(self, call: int) -> tuple[Choice, Choice]:
        """The analyzed and the final choice for a call's extra buffers."""
        phase = self.phases[self.phase_of[call]]
        if phase.kind != "S":
            analyzed = Choice("store", "saved by a K-barrier", None)
        else:
            analyzed = Choice("recompute", f"rebuilt by S-phase {phase.id}", f"S-phase {phase.id}")
        return analyzed, self.in_block(call) if self.layer(call) in self.streams.layers else analyzed

    def describe(self, storage: int) -> tuple[str, str]:
        """A storage's name (its owner's definition, source, or making call) and its type."""
        record = self.replay.storages[storage]
        owner = self.flow.values[record.owner]
        type_ = owner.type.items[record.item] if isinstance(owner.type, TupleType) else owner.type
        if owner.id in self.names or owner.source is not None:
            return self.names.get(owner.id, owner.source or ""), str(type_)
        target = self.flow.calls[record.producer].target
        return f"call {record.producer} {target}" + (f"[{record.item}]" if record.item is not None else ""), str(type_)

    def decisions(self) -> tuple[list[Decision], list[tuple[int, str | None]]]:
        """Every unit with its final decision (in program order), and (bytes, analyzed group) per unit."""
        found: list[tuple[tuple[int, int], Decision, Choice]] = []
        for storage in list(self.saver) + [s for s in self.phase_input if s not in self.saver]:
            record = self.replay.storages[storage]
            analyzed = self.analyzed(storage)
            final = self.reversible(storage, analyzed)
            name, type_ = self.describe(storage)
            home = self.home(storage)
            decision = Decision(
                storage,
                record.owner,
                home,
                name,
                type_,
                record.nbytes,
                final.decision,
                analyzed.decision,
                final.reason,
                final.group,
                self.layer(home),
                storage in self.saver,
            )
            found.append(((home, record.item or 0), decision, analyzed))
        for call, extra in self.replay.extra.items():
            if extra:
                analyzed, final = self.buffers(call)
                decision = Decision(
                    None,
                    None,
                    call,
                    f"{len(extra)} buffer(s) of call {call} {self.flow.calls[call].target}",
                    "",
                    sum(extra),
                    final.decision,
                    analyzed.decision,
                    final.reason,
                    final.group,
                    self.layer(call),
                    True,
                )
                found.append(((call, len(self.flow.calls)), decision, analyzed))
        found.sort(key=lambda entry: entry[0])
        return [d for _, d, _ in found], [(d.bytes, a.group) for _, d, a in found]
