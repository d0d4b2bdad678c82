"""`memory`: which activations backward needs, and whether to store, recompute or invert each.

What backward needs is asked of autograd itself, call by call: each primitive is
run once on meta tensors laid out as in the program (shapes, strides, offsets,
dtypes; requires_grad where eager training would have it: on parameters and on
what is computed from them) under saved-tensor hooks (`bwsk.passes.memory.saved_tensors.probe`),
cached by operator, operand layouts and static arguments. A saved operand or
output stands for its storage, so a saved view is its base and a storage saved by
several calls counts once; other saved buffers (layer norm's mean and rstd, a
matmul's reshaped copy) count as bytes of the call. Storages of parameters,
buffers and constants are weights, not activations, and never count.

Predicting eager autograd: lower with `level="training"` where the lowering can.
It keeps the composite operators eager runs (`linear`, `matmul`, `layer_norm`,
`softmax`, `dropout`), and a probe decomposes each exactly as eager does: the
prediction equals the measured bytes on the tiny gpt2 and bert. The core IR is
faithful too except that it turns eval-mode dropout into `clone`, a real copy
the next matmul saves where eager saves the softmax output itself; it
over-predicts by one attention-probability tensor per layer (+3% to +10% on the
tiny models at sequence 16 to 32). Pythia's rotary embedding does not lower at
the training level, so pythia is predicted from the core IR.

Modes (bytes live for backward when the forward ends, at the example shape):
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
                again, so neither is stored; only the last block's outputs are.
                Peak: the largest rebuilt block (its activations plus its
                inverted input) or S-phase. Assumed: every block of the stack is
                coupled (then the stored bytes do not grow with depth) and
                inverting needs no memory beyond the rebuilt values. Without a
                `couple` result it equals analyzed.
A `couple` result, if present, is a list of couplings with `layer` (the layer
made reversible) and `residuals` (the definition names of its residual adds, in
order); any pass giving that shape plugs in.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

import torch

from bwsk.ir import ops
from bwsk.ir.types import FunctionType, TensorType, TupleType, Type
from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.classify.rules import TensorInfo
from bwsk.passes.dataflow import Call, meta_tensor
from bwsk.passes.memory.saved_tensors import Saves, flat_outputs, probe, storage_key
from bwsk.passes.registry import Pass, register

GETITEM = "operator.getitem"
MODES = ("conventional", "checkpoint", "analyzed", "reversible")

DROPPED = "not kept"  # a reversible-mode decision: nothing keeps it from forward to backward


@dataclass(frozen=True)
class Layout:
    """A tensor's layout as a probe needs it; `grad`: requires_grad in eager training."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: torch.dtype
    grad: bool

    @staticmethod
    def of(tensor: torch.Tensor) -> Layout:
        return Layout(tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset(), tensor.dtype, tensor.requires_grad)

    def tensor(self) -> torch.Tensor:
        """A meta leaf with this layout on a storage of its own."""
        extent = 1 + sum((size - 1) * stride for size, stride in zip(self.shape, self.stride)) if all(self.shape) else 0
        storage = torch.empty(self.offset + extent, dtype=self.dtype, device="meta").untyped_storage()
        tensor = torch.empty(0, dtype=self.dtype, device="meta").set_(storage, self.offset, self.shape, self.stride)
        return tensor.requires_grad_(self.grad)


@dataclass(frozen=True)
class Probed:
    """What one call does to storages: per flat output its layout and what storage it shares, and what it saves.

    `shares[i]` is ("operand", k), ("output", j) for an earlier output j, or None for a new storage.
    """

    layouts: tuple[Layout | None, ...]
    shares: tuple[tuple[str, int] | None, ...]
    nbytes: tuple[int, ...]
    saves: Saves
    exact: bool  # False: the probe failed and every operand is assumed saved


_PROBES: dict[tuple, Probed] = {}


def _static(arg: Any) -> Any:
    """A hashable stand-in for an argument template: tensors become one marker."""
    if isinstance(arg, TensorInfo):
        return TensorInfo
    if isinstance(arg, (list, tuple)):
        return tuple(_static(a) for a in arg)
    return arg


def fill_operands(arg: Any, tensors: list[torch.Tensor]) -> Any:
    """`arg` with each TensorInfo replaced by the next of `tensors` (in the order the trace listed operands)."""
    if isinstance(arg, TensorInfo):
        return tensors.pop()
    if isinstance(arg, list):
        return [fill_operands(a, tensors) for a in arg]
    if isinstance(arg, tuple):
        return tuple(fill_operands(a, tensors) for a in arg)
    return arg


def _count_infos(arg: Any) -> int:
    if isinstance(arg, TensorInfo):
        return 1
    if isinstance(arg, (list, tuple)):
        return sum(_count_infos(a) for a in arg)
    return 0


def probe_call(call: Call, layouts: list[Layout]) -> Probed:
    """What `call` saves when its operands have `layouts` (cached by operator, layouts and static arguments)."""
    key = (call.target, tuple(layouts), _static(call.args), _static(tuple(call.kwargs.items())))
    found = _PROBES.get(key)
    if found is None:
        found = _PROBES[key] = _probe(call, layouts)
    return found


def _probe(call: Call, layouts: list[Layout]) -> Probed:
    function = ops.resolve(call.target)
    operands = [layout.tensor() for layout in layouts]

    def run(grad: bool) -> Any:
        stack = list(reversed(operands if grad else [o.detach() for o in operands]))
        args = [fill_operands(a, stack) for a in call.args]
        kwargs = {k: fill_operands(v, stack) for k, v in call.kwargs.items()}
        return function(*args, **kwargs)

    try:
        result, saves = probe(lambda: run(True), operands)
        exact = True
    except Exception:  # an operator autograd cannot run on meta: assume it saves every operand
        with torch.no_grad():
            result = run(False)
        saves, exact = Saves(tuple(range(len(operands))), (), ()), False
    by_operand = {storage_key(t): k for k, t in reversed(list(enumerate(operands)))}
    items = flat_outputs(result)
    layouts_out: list[Layout | None] = []
    shares: list[tuple[str, int] | None] = []
    nbytes: list[int] = []
    seen: dict[int, int] = {}
    for position, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            layouts_out.append(None)
            shares.append(None)
            nbytes.append(0)
            continue
        layout = Layout.of(item)
        key = storage_key(item)
        layouts_out.append(layout if exact else replace(layout, grad=_grad(layouts, item)))
        if key in by_operand:
            shares.append(("operand", by_operand[key]))
        elif key in seen:
            shares.append(("output", seen[key]))
        else:
            shares.append(None)
            seen[key] = position
        nbytes.append(item.untyped_storage().nbytes())
    return Probed(tuple(layouts_out), tuple(shares), tuple(nbytes), saves, exact)


def _grad(layouts: list[Layout], output: torch.Tensor) -> bool:
    return any(layout.grad for layout in layouts) and (output.is_floating_point() or output.is_complex())


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
    if len(layouts) != sum(_count_infos(a) for a in (*call.args, *call.kwargs.values())) or not all(isinstance(x, Layout) for x in layouts):
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


@dataclass
class Decision:
    """One unit of saved memory and what the plan does with it.

    A unit is a storage, named by its owner value, or the extra buffers one call
    saves (`value` None). `decision` is the plan with inversion (the analyzed plan
    when there is no coupling); `analyzed` the decision without it. `rebuilt_by`
    names the S-phase or coupled block whose rebuild in backward materialises the
    unit (None when stored). `saved` is False for a unit autograd does not save
    but the plan stores as an S-phase input.
    """

    storage: int | None  # the storage's id in the replay; None for buffers
    value: int | None  # the owner value; None for buffers
    call: int  # the call making the unit (for a program input: the first call reading it)
    name: str
    type: str
    bytes: int
    decision: str
    analyzed: str
    reason: str
    rebuilt_by: str | None
    layer: str
    saved: bool


@dataclass
class ModeTotal:
    """Bytes kept from forward to backward (`stored`), the largest rebuild in backward (`peak`), their sum."""

    stored: int
    peak: int
    total: int


@dataclass
class LayerTotal:
    """Per `layer_of` group: bytes autograd saves there, and how the plan's units split by decision."""

    layer: str
    saved: int
    store: int
    recompute: int
    invert: int


@dataclass
class MemoryResult:
    """Totals per mode (keys: MODES), every unit's decision in program order, per-layer totals."""

    modes: dict[str, ModeTotal]
    decisions: list[Decision]
    layers: list[LayerTotal]
    inexact: list[str]  # operators whose probe failed (every operand assumed saved)

    def to_json(self) -> dict:
        return {
            "modes": {name: asdict(total) for name, total in self.modes.items()},
            "decisions": [asdict(d) for d in self.decisions],
            "layers": [asdict(layer) for layer in self.layers],
            "inexact": list(self.inexact),
        }


def mode_total(units: Iterable[tuple[int, str | None]]) -> ModeTotal:
    """Stored bytes (group None) plus the largest group's bytes."""
    stored = 0
    groups: dict[str, int] = defaultdict(int)
    for nbytes, group in units:
        if group is None:
            stored += nbytes
        else:
            groups[group] += nbytes
    peak = max(groups.values(), default=0)
    return ModeTotal(stored, peak, stored + peak)


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


class Choice(NamedTuple):
    """A decision, its reason, and the S-phase or coupled block that rebuilds the unit (None when stored)."""

    decision: str
    reason: str
    group: str | None


class _Planner:
    """Builds the decisions and mode totals from a replay, the partition and (optionally) couplings."""

    def __init__(self, analysis: Analysis, replay: Replay):
        self.flow = analysis.flow
        self.replay = replay
        partition = analysis.result("partition")
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
        self.definitions = definition_values(analysis)
        self.names = {value: f"%{name}" for name, value in self.definitions.items()}
        self.invert: dict[int, str] = {}  # storage -> coupled layer whose inversion rebuilds it
        self.final: set[int] = set()  # storages of the last coupled blocks' outputs
        self.coupled: set[str] = set()
        self._couple(analysis.results.get("couple") or [])

    def _couple(self, couplings: list) -> None:
        """Mark the residual stream of each coupled block: its input and its residual outputs are inverted,
        except the outputs of a block that feeds no other coupled block (inversion starts from them)."""
        streams: dict[int, str] = {}
        for coupling in couplings:
            first = self.definitions.get(coupling.residuals[0])
            producer = self.flow.values[first].producer if first is not None else None
            if producer is None:
                continue
            self.coupled.add(coupling.layer)
            for value in self.flow.calls[producer].inputs:
                source = self.flow.values[value].producer
                if self.flow.values[value].activation and (source is None or self.layer(source) != coupling.layer):
                    streams[value] = coupling.layer
        for value, layer in streams.items():
            for storage in self.replay.roots(value):
                self.invert[storage] = layer
        for coupling in couplings:
            if coupling.layer not in self.coupled:
                continue
            for position, name in enumerate(coupling.residuals):
                value = self.definitions.get(name)
                for storage in self.replay.roots(value) if value is not None else ():
                    if value in streams or position < len(coupling.residuals) - 1:
                        self.invert.setdefault(storage, coupling.layer)
                    elif storage not in self.invert:
                        self.final.add(storage)

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
        if storage in self.invert:
            layer = self.invert[storage]
            return Choice("invert", f"residual stream of coupled block {layer}: rebuilt by inverting it", f"block {layer}")
        if storage in self.final:
            return Choice("store", "output of the last coupled blocks (combined from their two fp32 streams, which are kept too)", None)
        producer = self.replay.storages[storage].producer
        if producer is not None and self.layer(producer) in self.coupled:
            return self.in_block(producer)
        if not self.coupled:
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
            if self.layer(call.index) not in self.coupled:
                continue
            for value in call.inputs:
                producer = self.flow.values[value].producer
                if producer is None or self.layer(producer) not in self.coupled:
                    found.update(s for s in self.replay.roots(value) if not self.replay.storages[s].weight)
        return found

    def second_stream_bytes(self) -> int:
        """The two fp32 streams of the last coupled blocks, kept beside the combined output the program has there."""
        extra = 0
        for storage in self.final:
            value = self.flow.values[self.replay.storages[storage].owner]
            itemsize = value.type.dtype.itemsize if isinstance(value.type, TensorType) else 4
            extra += 2 * value.nbytes * 4 // itemsize
        return extra

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
        return analyzed, self.in_block(call) if self.layer(call) in self.coupled else analyzed

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
            decision = Decision(
                storage,
                record.owner,
                self.home(storage),
                name,
                type_,
                record.nbytes,
                final.decision,
                analyzed.decision,
                final.reason,
                final.group,
                self.layer(self.home(storage)),
                storage in self.saver,
            )
            found.append(((self.home(storage), record.item or 0), decision, analyzed))
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

    def checkpoint(self) -> ModeTotal:
        """Store the storages entering each numbered block and what autograd saves outside the blocks;
        rebuild one block at a time."""
        group_of = {call.index: self.layer(call.index) for call in self.flow.calls}
        blocks = {group for group in group_of.values() if group.rsplit(".", 1)[-1].isdigit()}
        stored: set[int] = set()
        outside_buffers = 0
        for call in self.flow.calls:
            if group_of[call.index] not in blocks:
                stored.update(self.replay.saved.get(call.index, ()))
                outside_buffers += sum(self.replay.extra.get(call.index, ()))
                continue
            for value in call.inputs:
                producer = self.flow.values[value].producer
                if producer is None or group_of[producer] != group_of[call.index]:
                    stored.update(self.replay.roots(value))
        rebuilt: dict[str, set[int]] = defaultdict(set)
        buffers: dict[str, int] = defaultdict(int)
        for call in self.flow.calls:
            if group_of[call.index] in blocks:
                rebuilt[group_of[call.index]].update(s for s in self.replay.saved.get(call.index, ()) if s not in stored)
                buffers[group_of[call.index]] += sum(self.replay.extra.get(call.index, ()))
        units = [(self.replay.storages[s].nbytes, None) for s in stored] + [(outside_buffers, None)]
        units += [(sum(self.replay.storages[s].nbytes for s in rebuilt[g]) + buffers[g], g) for g in blocks]
        return mode_total(units)


def plan(analysis: Analysis) -> MemoryResult:
    replayed = replay(analysis)
    planner = _Planner(analysis, replayed)
    decisions, analyzed_units = planner.decisions()
    saved = [d for d in decisions if d.saved]
    modes = {
        "conventional": mode_total((d.bytes, None) for d in saved),
        "checkpoint": planner.checkpoint(),
        "analyzed": mode_total(analyzed_units),
        "reversible": mode_total(
            [(d.bytes, d.rebuilt_by) for d in decisions if d.decision != DROPPED] + [(planner.second_stream_bytes(), None)]
        ),
    }
    layers: dict[str, LayerTotal] = {}
    for d in decisions:
        total = layers.setdefault(d.layer, LayerTotal(d.layer, 0, 0, 0, 0))
        total.saved += d.bytes if d.saved else 0
        if d.decision != DROPPED:
            setattr(total, d.decision, getattr(total, d.decision) + d.bytes)
    return MemoryResult(modes, decisions, list(layers.values()), sorted(replayed.inexact))


@register
class Memory(Pass):
    name = "memory"
    requires = ("classify", "partition")
    summary = "activation bytes backward needs: store, recompute or invert each; totals per training mode"

    def run(self, analysis: Analysis) -> MemoryResult:
        return plan(analysis)

    def notes(self, analysis: Analysis) -> dict[str, list[str]]:
        result: MemoryResult = analysis.result("memory")
        notes: dict[str, list[str]] = defaultdict(list)
        if analysis.program.defs:
            totals = ", ".join(f"{mode} {total.total:,} B" for mode, total in result.modes.items())
            notes[analysis.program.defs[0].name].append(f"memory: activation bytes for backward: {totals}")
        for d in result.decisions:
            shape = f"{d.type}, " if d.type else ""
            notes[analysis.calls[d.call].scope].append(f"memory: {d.decision} {d.name} ({shape}{d.bytes:,} B): {d.reason}")
        return dict(notes)
