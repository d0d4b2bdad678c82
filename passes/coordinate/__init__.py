"""`coordinate`: which logical axes every call mixes, and what sharding activations along an axis costs.

Every dimension of every activation is labelled with the logical axes it carries
(`batch`, `sequence`, `hidden`; the label algebra and sharding model are in
`bwsk.passes.coordinate.labels`), propagated from the program inputs call by call by the
per-op rules of `bwsk.passes.coordinate.rules`, which also say what each call mixes and what
communication sharding along each axis costs. An op without a rule (or a form its
rule does not model) is *unknown*: it mixes every axis it sees, its result is
taken as cut along all of them in every dimension, so what follows is costed
conservatively; such ops are reported.

Inputs, by rank unless the `inputs` option names their axes ("batch,sequence";
"-" for none): 1 [batch], 2 [batch, sequence] (token ids, masks), 3 [batch,
sequence, hidden], 4 images [batch, hidden, sequence, sequence]: channels count
as hidden, height and width as sequence-like space, and with one boundary per
axis per tensor an image is cut along its height while its width stays local.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bwsk.errors import BwskError
from bwsk.ir.types import TensorType, TupleType
from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.coordinate.labels import AXES, DEFAULT_INPUTS, Factor, Items, Labels, Unsupported, axes_of, fill, fits, plain, schema
from bwsk.passes.coordinate.rules import RULES, Site, pointwise, settle
from bwsk.passes.dataflow import Dataflow
from bwsk.passes.registry import Pass, register


@dataclass(frozen=True)
class Coordination:
    """One call: the axes it mixes (sorted), the communication each sharding needs (axis -> kind), and why."""

    target: str
    layer: str
    mixes: tuple[str, ...] = ()
    needs_comm: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # for every axis in `mixes` or `needs_comm`
    unknown: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mixes": list(self.mixes)}


@dataclass(frozen=True)
class CoordinateResult:
    """Per-call records (by call index), per-axis totals, the ops without a rule, and the labels of every activation.

    `to_json` lists only the calls that mix an axis or communicate.
    """

    calls: dict[int, Coordination]
    summary: dict[str, dict[str, Any]]  # axis -> {"calls": n, "per_layer": {layer: n}, "kinds": {kind: n}}
    unknown_targets: tuple[str, ...]
    inputs: dict[str, tuple[str, ...]]  # program input -> axis of each dimension ("-": none)
    labels: dict[int, Labels | Items]  # activation value id -> labels

    def __getitem__(self, index: int) -> Coordination:
        return self.calls[index]

    def axes(self, value: int) -> list[list[str]]:
        """The logical axes of each dimension of activation `value` (sorted names)."""
        return [sorted(axes_of(d)) for d in self.labels[value]]

    def to_json(self) -> dict[str, Any]:
        return {
            "axes": list(AXES),
            "inputs": {name: list(axes) for name, axes in self.inputs.items()},
            "summary": self.summary,
            "unknown": list(self.unknown_targets),
            "calls": [{"index": i, **r.to_json()} for i, r in sorted(self.calls.items()) if r.mixes or r.needs_comm],
        }


def input_axes(name: str, shape: Sequence[int], given: dict[str, str]) -> tuple[str, ...]:
    spec = given.get(name, DEFAULT_INPUTS.get(len(shape), ",".join("-" * len(shape))))
    names = tuple(part.strip() for part in spec.split(",")) if shape else ()
    if len(names) != len(shape) or not set(names) <= {*AXES, "-"}:
        raise BwskError(f"input %{name}: axes {spec!r} do not name its {len(shape)} dimension(s) with {', '.join(AXES)} or -")
    return names


def label(site: Site) -> tuple[Labels | Items | None, str | None]:
    """The labels of the call's result by its rule, or (for an op without a rule) every axis it sees, and why unknown."""
    function = RULES.get(site.call.target) or (pointwise if schema(site.call.target)[1] else None)
    try:
        if function is None:
            raise Unsupported("no rule")
        found = function(site)
        if fits(found, site.out):
            return found, None
        raise Unsupported("the rule's labels do not fit the result")
    except Exception as error:  # a form no rule models is conservatively unknown, and reported
        why = f"unknown op: {error}"
        seen = frozenset().union(*(axes_of(d) for v in site.call.inputs if isinstance(x := site.labels_of(v), tuple) for d in x))
        site.mixed = dict.fromkeys(sorted(seen), why)
        site.comm = {name: ("unknown", why) for name in sorted(seen)}
        return fill(site.out, seen), why


def coordinate(flow: Dataflow, given: dict[str, str]) -> CoordinateResult:
    """Label every activation from the inputs, call by call, and record what each call mixes and costs."""
    labels: dict[int, Labels | Items] = {}

    def labels_of(value: int) -> Labels | Items | None:
        found = labels.get(value)
        return found if found is not None else fill(flow.values[value].type)

    inputs: dict[str, tuple[str, ...]] = {}
    for value in flow.values.values():
        if value.source and value.source.startswith("%") and isinstance(value.type, TensorType):
            names = inputs[value.source[1:]] = input_axes(value.source[1:], value.type.shape, given)
            dims = tuple(plain(n) if a == "-" else (Factor(frozenset({a}), n, frozenset({a})),) for a, n in zip(names, value.type.shape))
            labels[value.id] = settle(dims)
    records: dict[int, Coordination] = {}
    for call in flow.calls:
        out, layer = flow.values[call.output], layer_of(call.module)
        if not out.activation or not isinstance(out.type, (TensorType, TupleType)):
            records[call.index] = Coordination(call.target, layer)
            continue
        site = Site(call, flow, labels_of)
        found, unknown = label(site)
        labels[call.output] = found if unknown else settle(found, site)  # an unknown result stays cut everywhere
        reasons = {**site.mixed, **{name: why for name, (_, why) in site.comm.items()}}
        comm = {name: kind for name, (kind, _) in sorted(site.comm.items())}
        mixes = tuple(sorted(site.mixed))
        records[call.index] = Coordination(call.target, layer, mixes, comm, dict(sorted(reasons.items())), unknown is not None)
    unknown_targets = tuple(sorted({r.target for r in records.values() if r.unknown}))
    return CoordinateResult(records, summarise(records), unknown_targets, inputs, labels)


def summarise(records: dict[int, Coordination]) -> dict[str, dict[str, Any]]:
    """Per axis: how many calls need communication under sharding along it, per layer and per kind."""
    layers: dict[str, Counter] = {name: Counter() for name in AXES}
    kinds: dict[str, Counter] = {name: Counter() for name in AXES}
    for record in records.values():
        for name, kind in record.needs_comm.items():
            layers[name][record.layer] += 1
            kinds[name][kind] += 1
    return {name: {"calls": sum(layers[name].values()), "per_layer": dict(layers[name]), "kinds": dict(kinds[name])} for name in AXES}


@register
class Coordinate(Pass):
    name = "coordinate"
    summary = "logical axes (batch, sequence, hidden) each call mixes, and the communication sharding along each costs"

    @classmethod
    def options(cls) -> dict[str, Any]:
        return {"inputs": {}}  # input name -> "batch,sequence,..." ("-" for a dimension without an axis)

    def run(self, analysis: Analysis) -> CoordinateResult:
        return coordinate(analysis.flow, dict(self.config["inputs"]))

    def notes(self, analysis: Analysis) -> dict[str, list[str]]:
        result: CoordinateResult = analysis.result(self.name)
        notes: dict[str, list[str]] = defaultdict(list)
        for call in analysis.calls:
            record = result.calls[call.index]
            for name, why in record.reasons.items():
                kind = record.needs_comm.get(name)
                cost = f"{name}-sharding needs {kind}" if kind else f"local under {name}-sharding"
                line = f"coordinate: {call.target} {'mixes' if name in record.mixes else 'moves'} {name} ({why}) -> {cost}"
                if line not in notes[call.scope]:
                    notes[call.scope].append(line)
        return notes
