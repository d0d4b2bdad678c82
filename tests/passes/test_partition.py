"""Partition invariants, as properties of random programs and on real models."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo_exports import tiny_program

from bwsk.ir.program import Definition, Input, Output, Program
from bwsk.ir.terms import Prim, Ref
from bwsk.ir.types import TensorType
from bwsk.passes.analysis import Analysis
from bwsk.passes.manager import PassManager
from bwsk.passes.partition import Partition

T = TensorType(torch.float32, (4, 8))
UNARY = ["aten.neg.default", "aten.tanh.default", "aten.relu.default", "aten.abs.default", "aten.exp.default", "aten.sigmoid.default"]
BINARY = ["aten.add.Tensor", "aten.sub.Tensor", "aten.maximum.default", "aten.mul.Tensor"]


@st.composite
def random_programs(draw) -> Program:
    """A random DAG of S calls (neg, tanh, exp, sigmoid, add, sub) and K calls (relu, abs, maximum)."""
    names = ["x", "y"]
    defs = []
    for i in range(draw(st.integers(1, 14))):
        if draw(st.booleans()):
            op = draw(st.sampled_from(UNARY))
            term = Prim(op, (Ref("value", draw(st.sampled_from(names))),))
        else:
            op = draw(st.sampled_from(BINARY))
            a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
            term = Prim(op, (Ref("value", a), Ref("value", b)))
        defs.append(Definition(f"v{i}", term, T))
        names.append(f"v{i}")
    outputs = tuple(Output(Ref("value", n), T) for n in draw(st.lists(st.sampled_from(names[2:]), min_size=1, max_size=3, unique=True)))
    return Program("random", (Input("x", T), Input("y", T)), (), tuple(defs), outputs)


def partitioned(program: Program) -> Analysis:
    return PassManager([Partition]).run(Analysis.of(program))


def check_invariants(analysis: Analysis) -> None:
    result = analysis.result(Partition)
    classes = analysis.classes
    calls = analysis.flow.graph()
    seen = [c for phase in result.phases for c in phase.calls]
    assert sorted(seen) == sorted(calls.nodes), "every call in exactly one phase"
    for phase in result.phases:
        kinds = {classes[c].kind for c in phase.calls}
        if phase.kind == "S":
            assert kinds == {"S"}, "no K in an S-phase"
            assert nx.is_weakly_connected(calls.subgraph(phase.calls)), "an S-phase is connected"
        else:
            assert len(phase.calls) == 1 and kinds <= {"K", "unknown"}
    graph = result.graph
    assert nx.is_directed_acyclic_graph(graph)
    for source, target in graph.edges:
        if result.phases[source].kind == "S" and result.phases[target].kind == "S":
            others = graph.copy()
            others.remove_edge(source, target)
            assert nx.has_path(others, source, target), f"S-phases {source} -> {target} could merge (not maximal)"


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(random_programs())
def test_partition_invariants_hold_on_random_programs(program):
    check_invariants(partitioned(program))


def test_partition_invariants_on_a_transformer():
    analysis = partitioned(tiny_program("gpt2"))
    check_invariants(analysis)
    per_layer = analysis.result(Partition).per_layer()
    first, second = per_layer["transformer.h.0"], per_layer["transformer.h.1"]
    assert first["K"] == second["K"]  # a barrier is one call, so identical layers have identical barriers
    assert abs(first["S"] - second["S"]) <= 1  # an S-phase may span a layer boundary and count for one side


def test_boundary_values_carry_their_bytes():
    analysis = partitioned(tiny_program("pythia-70m"))
    result = analysis.result(Partition)
    for source, target, data in result.graph.edges(data=True):
        assert data["bytes"] == sum(analysis.flow.values[v].nbytes for v in data["values"])
        produced = {analysis.calls[c].output for c in result.phases[source].calls}
        assert set(data["values"]) <= produced
        assert set(data["values"]) <= set(result.phases[source].outputs)
        assert set(data["values"]) <= set(result.phases[target].inputs)
