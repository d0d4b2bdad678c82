"""`bwsk.render.graph`: the phase graph as DOT and SVG, checked against the partition it draws."""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET

import pytest
from zoo_exports import tiny_program

from bwsk.passes.analysis import Analysis
from bwsk.passes.manager import PassManager
from bwsk.passes.partition import Partition
from bwsk.render.graph import DETAIL, K_FILL, S_FILL, to_dot, to_svg
from bwsk.render.units import human_bytes

SVG = "{http://www.w3.org/2000/svg}"
XLINK_TITLE = "{http://www.w3.org/1999/xlink}title"


def partitioned(program) -> Analysis:
    return PassManager([Partition]).run(Analysis.of(program))


@pytest.fixture(scope="module")
def two_layers() -> Analysis:
    return partitioned(tiny_program("pythia-70m"))


@pytest.fixture(scope="module")
def four_layers() -> Analysis:
    return partitioned(tiny_program("pythia-70m", layers=4, seq=16))  # at sequence 8 layer 0's phases differ from the rest


@pytest.fixture(scope="module")
def svg(two_layers: Analysis) -> ET.Element:
    return ET.fromstring(to_svg(two_layers))


def groups(root: ET.Element, kind: str) -> dict[str, ET.Element]:
    """The `<g class=kind>` elements by id."""
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("class") == kind}


def title(group: ET.Element) -> str:
    return group.find(f"{SVG}title").text


def text(group: ET.Element) -> str:
    return " ".join(t.text or "" for t in group.iter(f"{SVG}text")).replace("\xa0", " ")


def tooltips(root: ET.Element) -> list[str]:
    return [a.get(XLINK_TITLE).replace("\xa0", " ") for a in root.iter(f"{SVG}a") if a.get(XLINK_TITLE)]


def shape(node: ET.Element) -> tuple[str, int]:
    """Fill colour and corner count (+1: the closing point) of a node's polygon."""
    polygon = node.find(f".//{SVG}polygon")
    return polygon.get("fill"), len(polygon.get("points").split())


def test_a_cluster_per_layer_and_per_s_phase_and_a_node_per_k_barrier(two_layers: Analysis, svg: ET.Element):
    partition = two_layers.result(Partition)
    clusters, nodes = groups(svg, "cluster"), groups(svg, "node")
    for phase in partition.phases:
        if phase.kind == "S":
            assert title(clusters[f"phase{phase.id}"]) == f"cluster_p{phase.id}"
        else:
            assert title(nodes[f"phase{phase.id}"]) == f"k{phase.id}"
    layers = [g for g in clusters.values() if re.fullmatch(r"cluster_l\d+", title(g))]
    expected = {p.layer for p in partition.phases}
    assert len(layers) == len(expected)
    assert {text(g).split()[0] for g in layers} == expected


def test_every_call_is_drawn_once(two_layers: Analysis):
    dot = to_dot(two_layers)
    partition = two_layers.result(Partition)
    drawn = set()
    for phase in partition.phases:
        if phase.kind == "K":
            drawn.add(f"k{phase.id}")
        elif len(phase.calls) <= DETAIL:
            drawn.update(f"c{c}" for c in phase.calls)
        else:
            drawn.add(f"s{phase.id}")
    declared = re.findall(r"^\s*([cks]\d+) \[id=", dot, flags=re.M)
    assert sorted(declared) == sorted(drawn)


def test_s_and_k_differ_in_fill_and_shape(two_layers: Analysis, svg: ET.Element):
    partition = two_layers.result(Partition)
    nodes = groups(svg, "node")
    s_call = next(c for p in partition.phases if p.kind == "S" and len(p.calls) <= DETAIL for c in p.calls)
    k_phase = next(p for p in partition.phases if p.kind == "K" and two_layers.classes[p.calls[0]].kind == "K")
    s_fill, s_corners = shape(nodes[f"call{s_call}"])
    k_fill, k_corners = shape(nodes[f"phase{k_phase.id}"])
    assert (s_fill, k_fill) == (S_FILL, K_FILL)
    assert (s_corners, k_corners) == (5, 9)  # box, octagon


def test_tooltips_give_operator_shapes_and_reason(two_layers: Analysis, svg: ET.Element):
    tips = "\n".join(tooltips(svg))
    for call in two_layers.calls:
        verdict = two_layers.classes[call.index]
        assert verdict.reason in tips
        assert f"call {call.index}: {call.target}" in tips or f"\n{call.target}  [" in tips
        if verdict.condition:
            assert f"if {verdict.condition}" in tips
    softmax = next(c for c in two_layers.calls if c.target == "aten._softmax.default")
    output = str(two_layers.flow.values[softmax.output].type)
    assert f"-> {output}" in tips
    nodes = groups(svg, "node")
    assert all(g.find(f".//{SVG}a") is not None for g in nodes.values())


def test_edges_are_labelled_with_the_bytes_crossing(two_layers: Analysis):
    dot = to_dot(two_layers)
    graph = two_layers.result(Partition).graph
    labels = re.findall(r'tooltip="phase (\d+) -> phase (\d+): ([^"\\]+)', dot)
    assert len(labels) == graph.number_of_edges()
    for tail, head, label in labels:
        assert label == human_bytes(graph.edges[int(tail), int(head)]["bytes"])


def test_legend(svg: ET.Element):
    assert title(groups(svg, "cluster")["legend"]) == "cluster_legend"
    legend = [g for g in groups(svg, "node").values() if title(g).startswith("legend_")]
    words = " ".join(text(g) for g in legend)
    polygons = [shape(g) for g in legend if g.find(f".//{SVG}polygon") is not None]
    assert {corners for fill, corners in polygons if fill in (S_FILL, K_FILL)} == {5, 9}
    for item in ("S call", "K-barrier", "unknown", "bytes crossing"):
        assert item in words


@pytest.mark.slow
def test_collapse_folds_identical_layers(four_layers: Analysis):
    root = ET.fromstring(to_svg(four_layers, collapse="layers"))
    layers = [g for g in groups(root, "cluster").values() if re.fullmatch(r"cluster_l\d+", title(g))]
    folded = [g for g in layers if "(x4" in text(g)]
    assert len(folded) == 1
    assert "gpt_neox.layers.0 … gpt_neox.layers.3 (x4, identical)" in text(folded[0])
    assert not any(re.search(r"^gpt_neox\.layers\.[1-3]\b", text(g)) for g in layers)
    drawn = {g.get("id") for g in root.iter(f"{SVG}g")}
    for phase in four_layers.result(Partition).phases:
        assert (f"phase{phase.id}" in drawn) == (phase.layer not in {f"gpt_neox.layers.{i}" for i in (1, 2, 3)})


@pytest.mark.slow
def test_collapsed_edges_are_drawn_once(four_layers: Analysis):
    dot = to_dot(four_layers, collapse="layers")
    edges = re.findall(r"^\s*(\w+) -> (\w+) \[label=", dot, flags=re.M)
    assert len(edges) == len(set(edges))
    assert re.search(r'label="[^"]+ x3", [^\n]*style="dashed"', dot)  # one layer-to-layer edge stands for three


def test_output_is_deterministic(two_layers: Analysis):
    again = Analysis.of(two_layers.program)
    PassManager([Partition]).run(again)
    assert to_dot(two_layers) == to_dot(two_layers) == to_dot(again)
    assert to_dot(two_layers, collapse="layers") == to_dot(again, collapse="layers")
    assert to_svg(two_layers) == to_svg(again)


def test_svg_needs_no_dot_executable(two_layers: Analysis, monkeypatch, capfd):
    monkeypatch.setenv("PATH", "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ET.fromstring(to_svg(two_layers, collapse="layers"))
    assert not re.search(r"^(Warning|Error):", capfd.readouterr().err, flags=re.M)


def test_bad_collapse_is_refused(two_layers: Analysis):
    with pytest.raises(ValueError, match="collapse"):
        to_dot(two_layers, collapse="blocks")


def test_human_bytes():
    assert [human_bytes(n) for n in (8, 1024, 1536, 524288, 525312, 1 << 21)] == ["8 B", "1 KiB", "1.5 KiB", "512 KiB", "513 KiB", "2 MiB"]
    assert [human_bytes(n) for n in (0, -1536, 1.5 * 2**30, 2**50)] == ["0 B", "-1.5 KiB", "1.5 GiB", "1024 TiB"]
