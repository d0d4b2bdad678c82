"""The program's calls replayed on storages: which storage each value lives in and which storages each call saves.

A saved operand or output stands for its storage, so a saved view is its base
and a storage saved by several calls counts once; other saved buffers (layer
norm's mean and rstd, a matmul's reshaped copy) count as bytes of the call.
Storages of parameters, buffers and constants are weights, not activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bwsk.ir.types import TensorType, TupleType
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify.rules import GETITEM
from bwsk.passes.dataflow import Call, iter_tensor_infos, meta_tensor
from bwsk.passes.memory.operator_probe import Layout, probe_call


@dataclass
class Storage:
    """A storage the program allocates: the call that made it (None for a source), its size, and its owner.

    The owner is the value that first holds it as a tensor: the call's output, or for
    an item of a tuple output (`item`) the first `getitem` of it.
    """

    id: int
    producer: int | None
    item: int | None
    owner: int
    nbytes: int
    weight: bool  # a parameter, buffer or constant (views of it included)


@dataclass
class Replay:
    """The program's calls replayed on storages: what each value lives in and what each call saves.

    Invariants: `saved[c]` lists distinct non-weight storage ids; `extra[c]` the bytes
    of the call's other saved buffers (no zeros); every value's storage ids exist.
    """

    storages: list[Storage] = field(default_factory=list)
    layouts: dict[int, Any] = field(default_factory=dict)  # value id -> Layout, tuple of them, or None
    storage_of: dict[int, Any] = field(default_factory=dict)  # value id -> storage id, tuple of them, or None
    saved: dict[int, list[int]] = field(default_factory=dict)
    extra: dict[int, tuple[int, ...]] = field(default_factory=dict)
    inexact: set[str] = field(default_factory=set)

    def new_storage(self, producer: int | None, item: int | None, owner: int, nbytes: int, weight: bool) -> int:
        self.storages.append(Storage(len(self.storages), producer, item, owner, nbytes, weight))
        return len(self.storages) - 1

    def roots(self, value: int) -> list[int]:
        """The non-weight storages a value lives in."""
        found = self.storage_of.get(value)
        ids = found if isinstance(found, tuple) else (found,)
        return [s for s in ids if s is not None and not self.storages[s].weight]


def replay(analysis: Analysis) -> Replay:
    """Replay every call of the analysis's dataflow; program sources get one storage each (weights unless `%` inputs)."""
    flow = analysis.flow
    kinds = {f"@{s.name}": s.kind for s in analysis.program.state}
    result = Replay()
    for value in flow.values.values():
        if value.producer is None and isinstance(value.type, TensorType):
            tensor = meta_tensor(value.type, analysis.sizes)
            grad = kinds.get(value.source or "") == "param" and (tensor.is_floating_point() or tensor.is_complex())
            result.layouts[value.id] = Layout.of(tensor.requires_grad_(grad))
            weight = not (value.source or "").startswith("%")
            result.storage_of[value.id] = result.new_storage(None, None, value.id, tensor.untyped_storage().nbytes(), weight)
    for call in flow.calls:
        if call.target == GETITEM:
            _getitem(result, call)
        elif call.target.startswith("operator."):
            result.layouts[call.output] = result.storage_of[call.output] = None
        else:
            _apply(result, call, isinstance(flow.values[call.output].type, TupleType))
    return result


def _getitem(replay: Replay, call: Call) -> None:
    whole, index = call.inputs[0], call.args[1]
    layout = replay.layouts.get(whole)
    storage = replay.storage_of.get(whole)
    replay.layouts[call.output] = layout[index] if isinstance(layout, tuple) else None
    replay.storage_of[call.output] = item = storage[index] if isinstance(storage, tuple) else None
    if item is not None and replay.storages[item].owner == whole:
        replay.storages[item].owner = call.output


def _apply(replay: Replay, call: Call, is_tuple: bool) -> None:
    layouts = [replay.layouts.get(v) for v in call.inputs]
    operands = sum(1 for _ in iter_tensor_infos((call.args, tuple(call.kwargs.values()))))
    if len(layouts) != operands or not all(isinstance(x, Layout) for x in layouts):
        raise ValueError(f"call {call.index} ({call.target}): operands do not match its argument template")
    probed = probe_call(call, layouts)
    if not probed.exact:
        replay.inexact.add(call.target)
    operand_storage = [replay.storage_of[v] for v in call.inputs]
    storages: list[int | None] = []
    single = len(probed.layouts) == 1 and not is_tuple
    for position, (layout, share, nbytes) in enumerate(zip(probed.layouts, probed.shares, probed.nbytes)):
        if layout is None:
            storages.append(None)
        elif share is None:
            storages.append(replay.new_storage(call.index, None if single else position, call.output, nbytes, False))
        else:
            storages.append(operand_storage[share[1]] if share[0] == "operand" else storages[share[1]])
    replay.layouts[call.output] = probed.layouts[0] if single else probed.layouts
    replay.storage_of[call.output] = storages[0] if single else tuple(storages)
    saved = [operand_storage[k] for k in probed.saves.operands] + [storages[k] for k in probed.saves.outputs]
    replay.saved[call.index] = list(dict.fromkeys(s for s in saved if s is not None and not replay.storages[s].weight))
    replay.extra[call.index] = tuple(b for b in probed.saves.extra if b)
