"""Bytes live for backward when the forward ends, per training mode, at the example shape.

conventional: every storage autograd saves, plus every extra buffer.
checkpoint:   per-block checkpointing, one group per numbered `layer_of(module)`
              (`gpt_neox.layers.3`): the storages of the values entering each
              block and what autograd saves outside the blocks, plus the largest
              block's saved storages and buffers (recomputed in backward).
analyzed:     stores program inputs, K-barrier outputs and buffers, and the
              inputs of S-phases; recomputes each S-phase from its inputs in
              backward, adding the largest S-phase's recomputed bytes.
reversible:   analyzed, but with a `couple` result: the residual stream
              entering each coupled block is inverted from the block's output
              and the block's own activations are rebuilt by running F and G
              again, so neither is stored; only the last block's outputs (and
              their two float64 streams), the stack's side inputs and what autograd
              saves outside the blocks are. Peak: the largest rebuilt block (its
              activations plus its inverted input) or S-phase. Assumed: every
              block of the stack is coupled (then the stored bytes do not grow
              with depth) and inverting needs no memory beyond the rebuilt
              values. Without a `couple` result it equals analyzed.
"""

from __future__ import annotations

from collections import defaultdict

from bwsk.ir.types import TensorType
from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.dataflow import Dataflow
from bwsk.passes.memory.decisions import Planner
from bwsk.passes.memory.result import DROPPED, Decision, LayerTotal, MemoryResult, ModeTotal, mode_total
from bwsk.passes.memory.storages import Replay, replay

STREAM_ITEMSIZE = 8  # bytes per element of the reversible stack's streams (float64: `bwsk.training.reversible.stack.STREAMS`)


def plan(analysis: Analysis) -> MemoryResult:
    """Replay the program, decide every unit, and total the bytes per mode and per layer."""
    replayed = replay(analysis)
    planner = Planner(analysis, replayed)
    decisions, analyzed_units = planner.decisions()
    saved = [d for d in decisions if d.saved]
    streams = _stream_bytes(analysis.flow, replayed, planner.streams.final)
    modes = {
        "conventional": mode_total((d.bytes, None) for d in saved),
        "checkpoint": _checkpoint(analysis.flow, replayed),
        "analyzed": mode_total(analyzed_units),
        "reversible": mode_total([(d.bytes, d.rebuilt_by) for d in decisions if d.decision != DROPPED] + [(streams, None)]),
    }
    return MemoryResult(modes, decisions, _layer_totals(decisions), sorted(replayed.inexact))


def _checkpoint(flow: Dataflow, replay: Replay) -> ModeTotal:
    """Store the storages entering each numbered block and what autograd saves outside the blocks;
    rebuild one block at a time."""
    group_of = {call.index: layer_of(call.module) for call in flow.calls}
    blocks = {group for group in group_of.values() if group.rsplit(".", 1)[-1].isdigit()}
    stored: set[int] = set()
    outside_buffers = 0
    for call in flow.calls:
        if group_of[call.index] not in blocks:
            stored.update(replay.saved.get(call.index, ()))
            outside_buffers += sum(replay.extra.get(call.index, ()))
            continue
        for value in call.inputs:
            producer = flow.values[value].producer
            if producer is None or group_of[producer] != group_of[call.index]:
                stored.update(replay.roots(value))
    rebuilt: dict[str, set[int]] = defaultdict(set)
    buffers: dict[str, int] = defaultdict(int)
    for call in flow.calls:
        if group_of[call.index] in blocks:
            rebuilt[group_of[call.index]].update(s for s in replay.saved.get(call.index, ()) if s not in stored)
            buffers[group_of[call.index]] += sum(replay.extra.get(call.index, ()))
    units = [(replay.storages[s].nbytes, None) for s in stored] + [(outside_buffers, None)]
    units += [(sum(replay.storages[s].nbytes for s in rebuilt[g]) + buffers[g], g) for g in blocks]
    return mode_total(units)


def _stream_bytes(flow: Dataflow, replay: Replay, final: set[int]) -> int:
    """The two streams of the last coupled blocks, kept beside the combined output the program has there."""
    extra = 0
    for storage in final:
        value = flow.values[replay.storages[storage].owner]
        itemsize = value.type.dtype.itemsize if isinstance(value.type, TensorType) else 4
        extra += 2 * value.nbytes * STREAM_ITEMSIZE // itemsize
    return extra


def _layer_totals(decisions: list[Decision]) -> list[LayerTotal]:
    """Per layer, in order of first appearance: bytes autograd saves, and the units' bytes per kept decision."""
    layers: dict[str, LayerTotal] = {}
    for d in decisions:
        total = layers.setdefault(d.layer, LayerTotal(d.layer, 0, 0, 0, 0))
        total.saved += d.bytes if d.saved else 0
        if d.decision != DROPPED:
            setattr(total, d.decision, getattr(total, d.decision) + d.bytes)
    return list(layers.values())
