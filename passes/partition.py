"""`partition`: S-phases (maximal connected regions of S calls) and K-barriers (one per K call).

Invariants, checked by the tests on random programs: every call is in exactly
one phase; an S-phase holds only S calls and a K-barrier exactly one K (or
unknown) call; the phase graph is acyclic; and no two S-phases joined by an edge
could be merged without creating a cycle (maximality). Edges carry the values
that cross the boundary and their bytes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import networkx as nx

from bwsk.passes.analysis import Analysis, Pass, layer_of
from bwsk.passes.classify import Classify
from bwsk.passes.dataflow import Dataflow


@dataclass
class Phase:
    """A set of calls executed as a unit; `inputs`/`outputs` are the value ids crossing its boundary."""

    id: int
    kind: str  # "S" (a phase) or "K" (a barrier)
    calls: list[int]
    inputs: list[int]
    outputs: list[int]
    layer: str


@dataclass
class PartitionResult:
    phases: list[Phase]
    phase_of: dict[int, int]
    graph: nx.DiGraph  # phase ids; edge attribute "values" (ids) and "bytes"

    def per_layer(self) -> dict[str, Counter]:
        """Number of S-phases and K-barriers in each layer."""
        counts: dict[str, Counter] = defaultdict(Counter)
        for phase in self.phases:
            counts[phase.layer][phase.kind] += 1
        return dict(counts)


class _Groups:
    """Union of calls into groups with a group-level graph kept up to date."""

    def __init__(self, graph: nx.DiGraph):
        self.group = {node: node for node in graph.nodes}
        self.members = {node: [node] for node in graph.nodes}
        self.graph = nx.DiGraph()
        self.graph.add_nodes_from(graph.nodes)
        self.graph.add_edges_from(graph.edges)

    def merge(self, keep: int, gone: int) -> None:
        for node in self.members.pop(gone):
            self.group[node] = keep
            self.members[keep].append(node)
        for pred in list(self.graph.predecessors(gone)):
            if pred != keep:
                self.graph.add_edge(pred, keep)
        for succ in list(self.graph.successors(gone)):
            if succ != keep:
                self.graph.add_edge(keep, succ)
        self.graph.remove_node(gone)

    def path_avoiding_edge(self, source: int, target: int) -> bool:
        """Is `target` reachable from `source` other than by the direct edge?"""
        stack = [s for s in self.graph.successors(source) if s != target]
        seen = set(stack)
        while stack:
            node = stack.pop()
            if node == target:
                return True
            for succ in self.graph.successors(node):
                if succ not in seen:
                    seen.add(succ)
                    stack.append(succ)
        return False


def partition(flow: Dataflow, is_s: dict[int, bool], together: Iterable[Sequence[int]] = ()) -> PartitionResult:
    """Phases of `flow`; each set of S calls in `together` (a composite judged injective as a whole) lands in one phase."""
    calls = flow.graph()
    groups = _Groups(calls)
    s_group = {}  # group id -> True when it is an S group
    for node in calls.nodes:
        s_group[node] = is_s[node]
    for members in together:  # acyclic to merge: a composite's inner values are read only inside it
        for member in members[1:]:
            if groups.group[member] != groups.group[members[0]]:
                groups.merge(groups.group[members[0]], groups.group[member])
    changed = True
    while changed:  # merge S groups across every edge that creates no cycle, until none is left
        changed = False
        for source, target in list(groups.graph.edges):
            if source not in groups.members or target not in groups.members:
                continue
            if s_group[source] and s_group[target] and not groups.path_avoiding_edge(source, target):
                groups.merge(source, target)
                changed = True
    order = list(nx.topological_sort(groups.graph))
    renumber = {group: i for i, group in enumerate(order)}
    phase_of = {call: renumber[groups.group[call]] for call in calls.nodes}
    producers = {v.id: v.producer for v in flow.values.values()}
    users = flow.users()
    outputs = set(flow.outputs)
    phases = []
    for group in order:
        members = sorted(groups.members[group])
        pid = renumber[group]
        inside = set(members)
        entering = {v for c in members for v in flow.calls[c].inputs if producers[v] not in inside}
        leaving = {
            flow.calls[c].output
            for c in members
            if flow.calls[c].output in outputs or any(u not in inside for u in users[flow.calls[c].output])
        }
        layers = Counter(layer_of(flow.calls[c].module) for c in members)
        phases.append(Phase(pid, "S" if s_group[group] else "K", members, sorted(entering), sorted(leaving), layers.most_common(1)[0][0]))
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(phases)))
    for call in flow.calls:
        for value in call.inputs:
            producer = producers[value]
            if producer is None or phase_of[producer] == phase_of[call.index]:
                continue
            edge = graph.get_edge_data(phase_of[producer], phase_of[call.index])
            if edge is None:
                graph.add_edge(phase_of[producer], phase_of[call.index], values=[value], bytes=flow.values[value].nbytes)
            elif value not in edge["values"]:
                edge["values"].append(value)
                edge["bytes"] += flow.values[value].nbytes
    return PartitionResult(phases, phase_of, graph)


class Partition(Pass[PartitionResult]):
    name = "partition"
    requires = ("classify",)
    summary = "S-phases and K-barriers, with the tensors that cross each boundary"

    def run(self, analysis: Analysis) -> PartitionResult:
        classes = analysis.classes
        composites = analysis.result(Classify).composites
        return partition(analysis.flow, {c.index: classes[c.index].kind == "S" for c in analysis.calls}, [c.members for c in composites])
