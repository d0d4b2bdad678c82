"""`coordinate`: which logical axes every call mixes, and what sharding activations along an axis costs.

Every dimension of every activation is labelled with the logical axes it carries
(`batch`, `sequence`, `hidden`; the label algebra and sharding model are in
`bwsk.passes.coordinate.labels`), propagated from the program inputs call by call by the
per-op rules of `bwsk.passes.coordinate.rules`, which also say what each call mixes and what
communication sharding along each axis costs. An op without a rule (or a form its
rule does not model) is *unknown*: it mixes every axis it sees, its result is
taken as cut along all of them in every dimension, so what follows is costed
conservatively; such ops are reported.

Inputs, by rank unless `coordinate(flow, inputs)` names their axes ("batch,sequence";
"-" for none): 1 [batch], 2 [batch, sequence] (token ids, masks), 3 [batch,
sequence, hidden], 4 images [batch, hidden, sequence, sequence]: channels count
as hidden, height and width as sequence-like space, and with one boundary per
axis per tensor an image is cut along its height while its width stays local.
Inputs are whole in hidden: tensor parallelism cuts hidden only where a weight
splits it (see `labels`). A column-parallel product whose cut result reaches a call
that must communicate along hidden other than a row-parallel product (a norm or a
softmax over the cut features, a residual stream cut before its layer's norm) keeps
its weight whole instead, and the labelling is redone until no such product is left.

Counts are per call and match what torch's DTensor plans do per module: three
column-parallel q/k/v products cost three backward all-reduces where Megatron-LM,
all-reducing the shared input's gradient once, costs one (docs/analysis.md,
"Predicted and counted collectives").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bwsk.errors import BwskError
from bwsk.ir.types import TensorType, TupleType
from bwsk.passes.analysis import Analysis, Pass, layer_of
from bwsk.passes.coordinate.labels import (
    AXES,
    DEFAULT_INPUTS,
    HIDDEN,
    Factor,
    Items,
    Labels,
    Unsupported,
    axes_of,
    fill,
    fits,
    plain,
    schema,
)
from bwsk.passes.coordinate.rules import RULES, Site, pointwise, settle
from bwsk.passes.dataflow import Dataflow


@dataclass(frozen=True)
class Coordination:
    """One call: the axes it mixes (sorted), the communication each sharding needs forward and backward (axis -> kind), and why."""

    target: str
    layer: str
    mixes: tuple[str, ...] = ()
    needs_comm: dict[str, str] = field(default_factory=dict)
    backward_comm: dict[str, str] = field(default_factory=dict)
    split: str | None = None  # "column" or "row": how hidden (tensor-parallel) sharding splits this call's weight
    reasons: dict[str, str] = field(default_factory=dict)  # for every axis in `mixes`, `needs_comm` or `backward_comm`
    unknown: bool = False


@dataclass(frozen=True)
class CoordinateResult:
    """Per-call records (by call index), per-axis totals, the ops without a rule, and the labels of every activation."""

    calls: dict[int, Coordination]
    summary: dict[str, dict[str, Any]]  # axis -> {"calls", "per_layer", "kinds", "backward": the same for the backward}
    unknown_targets: tuple[str, ...]
    inputs: dict[str, tuple[str, ...]]  # program input -> axis of each dimension ("-": none)
    labels: dict[int, Labels | Items]  # activation value id -> labels

    def __getitem__(self, index: int) -> Coordination:
        return self.calls[index]

    def axes(self, value: int) -> list[list[str]]:
        """The logical axes of each dimension of activation `value` (sorted names)."""
        return [sorted(axes_of(d)) for d in self.labels[value]]


def input_axes(name: str, shape: Sequence[int], given: Mapping[str, str]) -> tuple[str, ...]:
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
        site.comm = site.back = {name: ("unknown", why) for name in sorted(seen)}
        return fill(site.out, seen), why


def coordinate(flow: Dataflow, inputs: Mapping[str, str] | None = None) -> CoordinateResult:
    """Label every activation, keeping whole the column-parallel products that make communication other than a row-parallel one.

    `inputs` names the axes of a program input's dimensions ("batch,sequence"; "-" for none) where the default by rank does not fit.
    """
    given = dict(inputs or {})
    whole: set[int] = set()
    while True:
        result = labelled(flow, given, whole)
        blamed = column_products_blamed(flow, result) - whole
        if not blamed:
            return result
        whole |= blamed


def cut_in_hidden(labels: Labels | Items | None) -> bool:
    if isinstance(labels, Items):
        return any(map(cut_in_hidden, labels.items))
    return any("hidden" in f.sharded for dim in labels or () for f in dim)


def column_products_blamed(flow: Dataflow, result: CoordinateResult) -> set[int]:
    """Column-parallel products whose cut hidden reaches a call (not a row-parallel product) that communicates along hidden."""
    blamed: set[int] = set()
    for index, record in result.calls.items():
        if "hidden" not in record.needs_comm or record.split == "row" or record.unknown:
            continue
        stack, seen = list(flow.calls[index].inputs), set()
        while stack:
            value = stack.pop()
            producer = flow.values[value].producer
            if value in seen or producer is None or not cut_in_hidden(result.labels.get(value)):
                continue
            seen.add(value)
            if result.calls[producer].split == "column":
                blamed.add(producer)
            else:
                stack.extend(flow.calls[producer].inputs)
    return blamed


def labelled(flow: Dataflow, given: Mapping[str, str], whole: set[int]) -> CoordinateResult:
    """Label every activation from the inputs, call by call, and record what each call mixes and costs."""
    labels: dict[int, Labels | Items] = {}

    def labels_of(value: int) -> Labels | Items | None:
        found = labels.get(value)
        return found if found is not None else fill(flow.values[value].type)

    inputs: dict[str, tuple[str, ...]] = {}
    for value in flow.values.values():
        if value.source and value.source.startswith("%") and isinstance(value.type, TensorType):
            names = inputs[value.source[1:]] = input_axes(value.source[1:], value.type.shape, given)
            dims = tuple(
                plain(n) if a == "-" else (Factor(frozenset({a}), n, frozenset({a}) - HIDDEN),) for a, n in zip(names, value.type.shape)
            )
            labels[value.id] = settle(dims)
    records: dict[int, Coordination] = {}
    for call in flow.calls:
        out, layer = flow.values[call.output], layer_of(call.module)
        if not out.activation or not isinstance(out.type, (TensorType, TupleType)):
            records[call.index] = Coordination(call.target, layer)
            continue
        site = Site(call, flow, labels_of, replicated=call.index in whole)
        found, unknown = label(site)
        labels[call.output] = found if unknown else settle(found, site)  # an unknown result stays cut everywhere
        reasons = {**site.mixed, **{name: why for name, (_, why) in (*site.back.items(), *site.comm.items())}}
        comm = {name: kind for name, (kind, _) in sorted(site.comm.items())}
        back = {name: kind for name, (kind, _) in sorted(site.back.items())}
        mixes = tuple(sorted(site.mixed))
        records[call.index] = Coordination(
            call.target, layer, mixes, comm, back, site.split, dict(sorted(reasons.items())), unknown is not None
        )
    unknown_targets = tuple(sorted({r.target for r in records.values() if r.unknown}))
    return CoordinateResult(records, summarise(records), unknown_targets, inputs, labels)


def summarise(records: dict[int, Coordination]) -> dict[str, dict[str, Any]]:
    """Per axis: how many calls need communication under sharding along it, per layer and per kind, forward and backward."""

    def count(needs: str) -> dict[str, dict[str, Any]]:
        layers: dict[str, Counter] = {name: Counter() for name in AXES}
        kinds: dict[str, Counter] = {name: Counter() for name in AXES}
        for record in records.values():
            for name, kind in getattr(record, needs).items():
                layers[name][record.layer] += 1
                kinds[name][kind] += 1
        return {name: {"calls": sum(layers[name].values()), "per_layer": dict(layers[name]), "kinds": dict(kinds[name])} for name in AXES}

    forward, backward = count("needs_comm"), count("backward_comm")
    return {name: {**forward[name], "backward": backward[name]} for name in AXES}


class Coordinate(Pass[CoordinateResult]):
    name = "coordinate"
    summary = "logical axes (batch, sequence, hidden) each call mixes, and the communication sharding along each costs"

    def run(self, analysis: Analysis) -> CoordinateResult:
        return coordinate(analysis.flow)
