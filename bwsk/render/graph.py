"""The phase graph of an Analysis as DOT and SVG: layers, S-phases, K-barriers, bytes between them.

Reads the `partition` and `classify` results (run them first). Invariants: one
cluster per layer (`layer_of`; nested in the layer whose module path prefixes
it, so `gpt_neox.layers.3` sits inside `gpt_neox`), holding one cluster per
S-phase (green: each call as a box, or one op-count summary node for a phase of
more than `DETAIL` calls) and one node per K-barrier (red octagon; amber diamond
when the verdict is unknown); every node has a tooltip with operator, shapes and
reason; every edge between phases is labelled with the bytes crossing it. With
`collapse="layers"`, each run of two or more consecutive numbered layers with
one signature (`_Scene.signature`) is drawn once as its first layer; edges into
or out of the run are mapped onto that layer and drawn once, labelled "xN" when
they stand for N edges. Output is a pure function of the analysis: no dict or
set order leaks.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pygraphviz

from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.dataflow import Call
from bwsk.passes.partition import Partition, Phase
from bwsk.render.units import human_bytes

DETAIL = 6  # S-phases with at most this many calls show each call; larger ones one summary node
SUMMARY_OPS = 6  # distinct operators named in a summary node's label
FONT = "Helvetica"
S_FILL, S_EDGE, S_BACK = "#a5d6a7", "#2e7d32", "#e8f5e9"
K_FILL, K_EDGE = "#ef9a9a", "#c62828"
U_FILL, U_EDGE = "#ffe082", "#ff8f00"
FOLD_BACK, FOLD_EDGE = "#e3f2fd", "#1565c0"
S_CALL = dict(shape="box", fillcolor=S_FILL, color=S_EDGE)
_NUMBERED = re.compile(r"(.*\.|)(\d+)")  # a numbered block: its siblings' common prefix, its number


def short_op(target: str) -> str:
    """`aten.native_layer_norm.default` -> `native_layer_norm`; `operator.getitem` -> `getitem`."""
    parts = target.split(".")
    return parts[1] if parts[0] == "aten" and len(parts) > 1 else parts[-1]


def _quote(text: str) -> str:
    """A DOT double-quoted string whose escString rendering is `text` (newlines become \\n)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attributes: str | int | float) -> str:
    return "[" + ", ".join(f"{key}={_quote(str(value))}" for key, value in attributes.items()) + "]"


@dataclass(frozen=True)
class _Fold:
    """Consecutive layers with one signature; `layers[0]` is drawn, `alias` maps the others' phases onto it."""

    layers: tuple[str, ...]
    alias: dict[int, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.layers[0]} … {self.layers[-1]} (x{len(self.layers)}, identical)"


class _Scene:
    """The analysis seen as layers of phases, with the folds that `collapse="layers"` asks for."""

    def __init__(self, analysis: Analysis, collapse: str | None):
        if collapse not in (None, "layers"):
            raise ValueError(f"collapse must be None or 'layers', not {collapse!r}")
        self.analysis = analysis
        self.calls = analysis.calls
        self.values = analysis.flow.values
        self.classes = analysis.classes
        self.partition = analysis.result(Partition)
        self.layers: dict[str, list[Phase]] = {}
        for phase in sorted(self.partition.phases, key=lambda p: (min(p.calls), p.id)):
            self.layers.setdefault(phase.layer, []).append(phase)
        self.number = {layer: n for n, layer in enumerate(self.layers)}
        self.children: dict[str | None, list[str]] = {}
        for layer in self.layers:  # a layer nests in the longest other layer that is a module prefix of it
            parents = [p for p in self.layers if layer.startswith(p + ".")]
            self.children.setdefault(max(parents, key=len) if parents else None, []).append(layer)
        self.fold_of: dict[str, _Fold] = {}
        if collapse == "layers":
            for fold in self._folds():
                self.fold_of.update((layer, fold) for layer in fold.layers)

    def active(self, phase: Phase) -> list[int]:
        """The phase's calls whose result carries an activation (not weights or constants)."""
        return [c for c in phase.calls if self.values[self.calls[c].output].activation]

    def signature(self, layer: str) -> tuple[list[Phase], tuple]:
        """The layer's phases holding its own activation calls, in order of the first, and their kinds and those calls' targets.

        Only the layer's own calls (by module) on activations count: the partition merges S
        calls across layer boundaries (the embedding into layer 0's first phase, layer k's
        last getitem into layer k+1's) and may gather every layer's weight or constant
        preparation in one layer (the rotary tables in layer 0).
        """
        own = {p.id: [c for c in self.active(p) if layer_of(self.calls[c].module) == layer] for p in self.layers[layer]}
        phases = [p for _, p in sorted((own[p.id][0], p) for p in self.layers[layer] if own[p.id])]
        return phases, tuple((p.kind, tuple(self.calls[c].target for c in own[p.id])) for p in phases)

    def _folds(self) -> Iterator[_Fold]:
        """Maximal runs of siblings numbered n, n+1, ... (`gpt_neox.layers.3`, `.4`) with one signature."""
        numbered = sorted((m[1], int(m[2]), layer) for layer in self.layers if (m := _NUMBERED.fullmatch(layer)))
        runs: list[list[tuple[str, int, tuple, str]]] = []
        for prefix, number, layer in numbered:
            signature = self.signature(layer)[1]
            last = runs[-1][-1] if runs else None
            if last and (last[0], last[1] + 1, last[2]) == (prefix, number, signature):
                runs[-1].append((prefix, number, signature, layer))
            else:
                runs.append([(prefix, number, signature, layer)])
        for run in (r for r in runs if len(r) > 1):
            layers = tuple(layer for *_, layer in run)
            drawn = self.signature(layers[0])[0]
            yield _Fold(layers, {p.id: d.id for other in layers[1:] for p, d in zip(self.signature(other)[0], drawn)})

    def hidden(self, layer: str) -> bool:
        fold = self.fold_of.get(layer)
        return fold is not None and fold.layers[0] != layer

    def detailed(self, phase: Phase) -> bool:
        return phase.kind == "S" and len(phase.calls) <= DETAIL

    def describe(self, call: Call) -> str:
        """Operator, shapes in and out, and the verdict with its reason (and condition)."""
        verdict = self.classes[call.index]
        inputs = ", ".join(str(self.values[v].type) for v in call.inputs) or "-"
        text = f"{call.target}  [{call.module or '<top>'}]\n  {inputs} -> {self.values[call.output].type}"
        text += f"\n  {verdict.kind}: {verdict.reason}"
        return text + (f"\n  if {verdict.condition}" if verdict.condition else "")

    def where(self, phase: Phase) -> str:
        """The module most of the phase's calls run in, relative to its layer ("" when the layer itself)."""
        prefix = phase.layer + "."
        inner = Counter(m[len(prefix) :] for c in phase.calls if (m := self.calls[c].module).startswith(prefix))
        return max(sorted(inner), key=inner.__getitem__) if inner else ""

    def entry(self, phase: Phase) -> str:
        """The node an edge into `phase` attaches to."""
        if phase.kind == "K":
            return f"k{phase.id}"
        return f"c{phase.calls[0]}" if self.detailed(phase) else f"s{phase.id}"

    def exit(self, phase: Phase) -> str:
        """The node an edge out of `phase` leaves from."""
        if phase.kind == "K":
            return f"k{phase.id}"
        return f"c{phase.calls[-1]}" if self.detailed(phase) else f"s{phase.id}"


def _clip(phase: Phase) -> str:
    """The cluster an edge to or from `phase` ends at: its S-phase cluster; none for a K-barrier node."""
    return f"cluster_p{phase.id}" if phase.kind == "S" else ""


@dataclass
class _Edge:
    """One drawn edge: the phase edges it stands for and the bytes each carries."""

    values: list[int] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    internal: bool = False  # stands for an edge inside one drawn layer
    crossing: bool = False  # stands for an edge between two layers of one fold

    @property
    def carried(self) -> bool:
        """Only from one folded layer to another: drawn dashed and left out of the ranking."""
        return self.crossing and not self.internal


class _Writer:
    """DOT text for a scene: the legend, layer clusters (nested) holding phase clusters and nodes, then the edges."""

    def __init__(self, scene: _Scene):
        self.scene = scene
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str) -> None:
        self.lines.append("  " * self.depth + text)

    def open(self, name: str, **attributes: str | int | float) -> None:
        self.line(f"subgraph {name} {{")
        self.depth += 1
        for key, value in attributes.items():
            self.line(f"{key}={_quote(str(value))};")

    def statement(self, subject: str, **attributes: str | int | float) -> None:
        """A node (`subject` a name) or edge (`a -> b`) statement with its attributes."""
        self.line(f"{subject} {_attrs(**attributes)};")

    def close(self) -> None:
        self.depth -= 1
        self.line("}")

    def graph(self) -> str:
        self.line(f"digraph {_quote(self.scene.analysis.program.name)} {{")
        self.depth += 1
        # newrank: rank across clusters (else a top-level cluster both feeding and fed by the layers is drawn upside down)
        self.line(
            f'graph [compound=true, newrank=true, rankdir=TB, fontname="{FONT}", fontsize=11, nodesep=0.2, ranksep=0.35, labeljust=l];'
        )
        self.line(f'node [fontname="{FONT}", fontsize=9, height=0.25, margin="0.06,0.03"];')
        self.line(f'edge [fontname="{FONT}", fontsize=8, color="#546e7a", fontcolor="#37474f", arrowsize=0.6];')
        self.legend()
        for layer in self.scene.children.get(None, []):
            self.layer(layer)
        self.edges()
        self.depth -= 1
        self.line("}")
        return "\n".join(self.lines) + "\n"

    def legend(self) -> None:
        self.open("cluster_legend", id="legend", label="legend", style="rounded", color="#9e9e9e", tooltip="legend")
        items = [
            ("legend_s", "S call\n(injective)", dict(S_CALL, style="filled")),
            ("legend_ops", "S-phase summary\n(op counts)", dict(S_CALL, style="filled,rounded")),
            ("legend_k", "K-barrier\n(erasing)", dict(shape="octagon", style="filled", fillcolor=K_FILL, color=K_EDGE)),
            ("legend_u", "unknown\nbarrier", dict(shape="diamond", style="filled", fillcolor=U_FILL, color=U_EDGE)),
            ("legend_c", "weights/constants\nonly (dashed)", dict(S_CALL, style="filled,dashed", fillcolor=S_BACK)),
            (
                "legend_e",
                "green cluster = one S-phase; blue cluster = identical layers drawn once\n"
                "edge label = bytes crossing a phase boundary; xN = N edges drawn once\n"
                "dashed blue edge = from one folded layer into another\n"
                "hover a node for operator, shapes and S/K reason",
                dict(shape="plaintext"),
            ),
        ]
        for name, label, style in items:
            self.statement(name, label=label, tooltip=label.replace("\n", " "), **style)
        self.line(" -> ".join(name for name, _, _ in items) + " [style=invis];  # one column")
        self.close()

    def layer(self, layer: str) -> None:
        """The layer's cluster: its phases, then the clusters of the layers nested in it (drawn ones only)."""
        if self.scene.hidden(layer):
            return
        number, phases = self.scene.number[layer], self.scene.layers[layer]
        fold = self.scene.fold_of.get(layer)
        counts = Counter(p.kind for p in phases)
        summary = f"{counts['S']} S-phases, {counts['K']} K-barriers"
        if fold:
            why = f"{fold.label}: drawn once as {layer}; same S/K phase sequence and own call targets on activations"
            look = dict(label=f"{fold.label}\n{summary} each", style="filled,bold", fillcolor=FOLD_BACK, color=FOLD_EDGE, tooltip=why)
        else:
            look = dict(label=f"{layer}\n{summary}", style="rounded", color="#90a4ae", tooltip=f"layer {layer}: {summary}")
        self.open(f"cluster_l{number}", id=f"layer{number}", penwidth=2 if fold else 1, **look)
        for phase in phases:
            self.phase(phase)
        for child in self.scene.children.get(layer, []):
            self.layer(child)
        self.close()

    def phase(self, phase: Phase) -> None:
        scene = self.scene
        constant = not scene.active(phase)
        if phase.kind == "K":
            call = scene.calls[phase.calls[0]]
            unknown = scene.classes[call.index].kind == "unknown"
            style = "filled,dashed" if constant else "filled"
            label = f"{short_op(call.target)}\n{scene.where(phase)}".strip()
            look = (
                dict(shape="diamond", fillcolor=U_FILL, color=U_EDGE) if unknown else dict(shape="octagon", fillcolor=K_FILL, color=K_EDGE)
            )
            self.statement(
                f"k{phase.id}",
                id=f"phase{phase.id}",
                label=label,
                style=style,
                tooltip=f"K-barrier {phase.id}\n{scene.describe(call)}",
                **look,
            )
            return
        ops = Counter(short_op(scene.calls[c].target) for c in phase.calls)
        label = f"S-phase {phase.id}  {scene.where(phase)}".strip()
        self.open(
            f"cluster_p{phase.id}",
            id=f"phase{phase.id}",
            label=label,
            fontsize=8,
            style="filled,dashed" if constant else "filled",
            fillcolor=S_BACK,
            color=S_EDGE,
            tooltip=f"S-phase {phase.id}: {len(phase.calls)} calls, {len(phase.inputs)} values in, {len(phase.outputs)} out",
        )
        if scene.detailed(phase):
            for c in phase.calls:
                call = scene.calls[c]
                tooltip = f"call {c}: {scene.describe(call)}"
                label = short_op(call.target)
                self.statement(f"c{c}", id=f"call{c}", label=label, **S_CALL, style="filled", tooltip=tooltip)
            inside = set(phase.calls)
            for c in phase.calls:
                for producer in dict.fromkeys(scene.values[v].producer for v in scene.calls[c].inputs):
                    if producer in inside:
                        self.line(f'c{producer} -> c{c} [color="{S_EDGE}", arrowsize=0.4];')
        else:
            named = sorted(ops.items(), key=lambda item: (-item[1], item[0]))
            parts = [f"{op} x{n}" if n > 1 else op for op, n in named[:SUMMARY_OPS]]
            if len(named) > SUMMARY_OPS:
                parts.append(f"+{len(named) - SUMMARY_OPS} more")
            rows = [", ".join(parts[i : i + 3]) for i in range(0, len(parts), 3)]
            lines = "\n".join(f"call {c}: {scene.describe(scene.calls[c])}" for c in phase.calls)
            label = f"{len(phase.calls)} ops\n" + "\n".join(rows)
            tooltip = f"S-phase {phase.id}\n{lines}"
            self.statement(f"s{phase.id}", id=f"phase{phase.id}-ops", label=label, **S_CALL, style="filled,rounded", tooltip=tooltip)
        self.close()

    def endpoint(self, phase_id: int, partner: int) -> tuple[Phase, str] | None:
        """Where a phase's edge is drawn: itself, its alias in a fold's drawn layer, or the fold's border.

        Returns the drawn phase and the cluster the edge is clipped at; None drops the edge
        (inside one hidden layer, or an unaligned phase inside its own fold).
        """
        scene = self.scene
        phases = scene.partition.phases
        phase = phases[phase_id]
        if not scene.hidden(phase.layer):
            return phase, _clip(phase)
        fold = scene.fold_of[phase.layer]
        other = phases[partner].layer
        if other == phase.layer:
            return None
        if phase_id in fold.alias:
            drawn = phases[fold.alias[phase_id]]
            return drawn, _clip(drawn)
        if other in fold.layers:
            return None
        return scene.layers[fold.layers[0]][0], f"cluster_l{scene.number[fold.layers[0]]}"

    def edges(self) -> None:
        scene = self.scene
        drawn: dict[tuple[int, str, int, str], _Edge] = {}
        for tail, head in sorted(scene.partition.graph.edges):
            data = scene.partition.graph.edges[tail, head]
            source, target = self.endpoint(tail, head), self.endpoint(head, tail)
            if source is None or target is None:
                continue
            key = (source[0].id, source[1], target[0].id, target[1])
            edge = drawn.setdefault(key, _Edge())
            edge.values.extend(data["values"])
            edge.nbytes.append(data["bytes"])
            layers = (scene.partition.phases[tail].layer, scene.partition.phases[head].layer)
            fold = scene.fold_of.get(layers[0])
            edge.internal |= layers[0] == layers[1]
            edge.crossing |= fold is not None and layers[0] != layers[1] and layers[1] in fold.layers
        phases = scene.partition.phases
        for (tail, tail_clip, head, head_clip), edge in drawn.items():
            sizes = set(edge.nbytes)
            label = human_bytes(edge.nbytes[0]) if len(sizes) == 1 else f"{human_bytes(sum(edge.nbytes))} total"
            label += f" x{len(edge.nbytes)}" if len(edge.nbytes) > 1 else ""
            types = ", ".join(str(scene.values[v].type) for v in dict.fromkeys(edge.values[:8]))
            more = f" (+{len(edge.values) - 8} more)" if len(edge.values) > 8 else ""
            attributes = dict(label=label, tooltip=f"phase {tail} -> phase {head}: {label}\n{types}{more}")
            if tail_clip and tail != head:  # a loop (layer k's phase feeding its alias in layer k+1) is not clipped
                attributes["ltail"] = tail_clip
            if head_clip and tail != head:
                attributes["lhead"] = head_clip
            if edge.carried:
                attributes.update(style="dashed", constraint="false", color=FOLD_EDGE)
            self.statement(f"{scene.exit(phases[tail])} -> {scene.entry(phases[head])}", **attributes)


def to_dot(analysis: Analysis, *, collapse: str | None = None) -> str:
    """The phase graph as DOT text; `collapse="layers"` folds runs of identical layers."""
    return _Writer(_Scene(analysis, collapse)).graph()


def to_svg(analysis: Analysis, *, collapse: str | None = None) -> str:
    """`to_dot` laid out by Graphviz's dot engine in-process (no `dot` executable needed), as SVG text."""
    graph = pygraphviz.AGraph(string=to_dot(analysis, collapse=collapse))
    with _quiet_fontconfig():
        return graph.draw(format="svg", prog="dot").decode("utf-8")


@contextlib.contextmanager
def _quiet_fontconfig() -> Iterator[None]:
    """Drop the wheel's fontconfig complaint about the system's newer config; pass other stderr through."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not line.startswith("Fontconfig warning"):
                    sys.stderr.write(line)
