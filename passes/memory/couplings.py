"""The residual streams a `couple` result makes reversible: which storages are inverted, which are kept.

A `couple` result is a list of couplings with `layer` (the layer made
reversible) and `residuals` (the definition names of its residual adds, in
order); any pass giving that shape plugs in. A coupling whose first residual
the trace never computes is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bwsk.ir.types import FunctionType, TensorType, Type
from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.dataflow import Dataflow
from bwsk.passes.memory.storages import Replay


def definition_values(analysis: Analysis) -> dict[str, int]:
    """Value definitions by name -> the value they evaluate to: the last call made for them, if its type is theirs."""
    last: dict[str, int] = {}
    for call in analysis.calls:
        if call.scopes:
            last[call.scopes[0]] = call.output
    values = analysis.flow.values
    return {
        d.name: last[d.name]
        for d in analysis.program.defs
        if d.name in last and not isinstance(d.type, FunctionType) and _conforms(values[last[d.name]].type, d.type)
    }


def _conforms(traced: Type, declared: Type | None) -> bool:
    """Could a traced value have the declared type (symbolic dimensions match any size)?"""
    if declared is None:
        return True
    if isinstance(traced, TensorType) and isinstance(declared, TensorType):
        return traced.dtype == declared.dtype and len(traced.shape) == len(declared.shape)
    return type(traced) is type(declared)


@dataclass
class CoupledStreams:
    """Storages of the coupled residual streams. Invariant: every layer named in `invert` is in `layers`."""

    layers: set[str] = field(default_factory=set)  # the coupled layers
    invert: dict[int, str] = field(default_factory=dict)  # storage -> coupled layer whose inversion rebuilds it
    final: set[int] = field(default_factory=set)  # storages of the last coupled blocks' outputs


def coupled_streams(flow: Dataflow, replay: Replay, definitions: dict[str, int], couplings: list) -> CoupledStreams:
    """Mark the residual stream of each coupled block: its input and its residual outputs are inverted,
    except the outputs of a block that feeds no other coupled block (inversion starts from them)."""
    found = CoupledStreams()
    streams: dict[int, str] = {}  # value entering a coupled block from outside it -> that block's layer
    for coupling in couplings:
        first = definitions.get(coupling.residuals[0])
        producer = flow.values[first].producer if first is not None else None
        if producer is None:
            continue
        found.layers.add(coupling.layer)
        for value in flow.calls[producer].inputs:
            source = flow.values[value].producer
            if flow.values[value].activation and (source is None or layer_of(flow.calls[source].module) != coupling.layer):
                streams[value] = coupling.layer
    for value, layer in streams.items():
        for storage in replay.roots(value):
            found.invert[storage] = layer
    for coupling in couplings:
        if coupling.layer not in found.layers:
            continue
        for position, name in enumerate(coupling.residuals):
            value = definitions.get(name)
            for storage in replay.roots(value) if value is not None else ():
                if value in streams or position < len(coupling.residuals) - 1:
                    found.invert.setdefault(storage, coupling.layer)
                elif storage not in found.invert:
                    found.final.add(storage)
    return found
