"""The coordinate pass: which logical axes each call mixes, and what sharding along batch, sequence or hidden costs."""

from __future__ import annotations

import functools
import json
import re
import time

import pytest
import torch
import torch.nn.functional as F
from zoo_exports import sweep_after_first, tiny_program

from bwsk.errors import BwskError
from bwsk.frontend.compile import lower
from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.coordinate import Coordinate, CoordinateResult, coordinate
from bwsk.passes.coordinate.labels import PAIRS, Factor, reshape
from bwsk.passes.manager import PassManager
from bwsk.render.notes import coordinate_notes
from bwsk.render.report import coordination_json

TRANSFORMERS = sweep_after_first(["pythia-70m", "gpt2", "bert-base"])
MATMULS = ("aten.addmm.default", "aten.mm.default")
NORMS = ("aten.native_layer_norm.default",)


@functools.cache
def zoo_analysis(name: str) -> Analysis:
    return PassManager([Coordinate]).run(Analysis.of(tiny_program(name)))


def module_analysis(module: torch.nn.Module, *inputs: torch.Tensor, level: str = "core") -> Analysis:
    program = lower(torch.export.export(module, inputs), level=level)
    return PassManager([Coordinate]).run(Analysis.of(program))


def result(analysis: Analysis) -> CoordinateResult:
    return analysis.result(Coordinate)


def numbered_layers(analysis: Analysis) -> list[str]:
    return sorted({layer_of(c.module) for c in analysis.calls if re.search(r"\.\d+$", layer_of(c.module))})


def communicating(analysis: Analysis, axis: str, layer: str) -> list[str]:
    """Targets of the calls in `layer` that need communication under sharding along `axis`, in order."""
    return [c.target for c in analysis.calls if layer_of(c.module) == layer and axis in result(analysis)[c.index].needs_comm]


@pytest.mark.slow
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_every_transformer_op_has_a_rule_and_batch_sharding_never_communicates(name):
    found = result(zoo_analysis(name))
    assert found.unknown_targets == ()
    assert found.summary["batch"]["calls"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_sequence_sharding_gathers_keys_and_values_at_the_two_attention_products(name):
    analysis = zoo_analysis(name)
    records = result(analysis)
    for layer in numbered_layers(analysis):
        calls = [c for c in analysis.calls if layer_of(c.module) == layer and "sequence" in records[c.index].needs_comm]
        assert [c.target for c in calls] == ["aten.bmm.default", "aten.bmm.default"]
        scores, mixed = (records[c.index] for c in calls)
        assert scores.needs_comm["sequence"] == mixed.needs_comm["sequence"] == "all-gather"
        assert scores.reasons["sequence"] == PAIRS and mixed.reasons["sequence"] == "contraction"
        softmax = [records[c.index] for c in analysis.calls if layer_of(c.module) == layer and c.target == "aten._softmax.default"]
        assert [(s.mixes, s.needs_comm) for s in softmax] == [(("sequence",), {})]  # keys are whole by then


@pytest.mark.slow
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_hidden_sharding_is_tensor_parallel_with_an_all_reduce_after_attention_and_after_the_mlp(name):
    analysis = zoo_analysis(name)
    records = result(analysis)
    for layer in numbered_layers(analysis):
        calls = [records[c.index] for c in analysis.calls if layer_of(c.module) == layer]
        assert communicating(analysis, "hidden", layer) == list(MATMULS[:1]) * 2
        assert [r.split for r in calls if "hidden" in r.needs_comm] == ["row", "row"]
        columns = [r for r in calls if r.split == "column"]
        assert columns and all(r.backward_comm == {"hidden": "all-reduce"} for r in columns)  # the input's gradient
        assert all("hidden" not in r.needs_comm and "hidden" in r.mixes for r in calls if r.target in NORMS)  # whole rows
        bmms = [r for r in calls if r.target == "aten.bmm.default"]
        assert "hidden" in bmms[0].mixes and all("hidden" not in b.needs_comm for b in bmms)  # heads stay whole per shard


class Projections(torch.nn.Module):
    """Two linears, then (optionally) a normalisation over the features."""

    def __init__(self, norm: bool):
        super().__init__()
        self.up, self.down, self.norm = torch.nn.Linear(6, 12), torch.nn.Linear(12, 6), norm

    def forward(self, x):
        y = self.up(x)
        return F.layer_norm(y, (12,)) if self.norm else self.down(y)


@pytest.mark.slow
def test_a_column_parallel_product_feeds_a_row_parallel_one_unless_its_features_are_normalised():
    paired = result(module_analysis(Projections(norm=False), torch.randn(2, 5, 6)))
    assert [(r.split, r.needs_comm, r.backward_comm) for r in paired.calls.values() if r.split] == [
        ("column", {}, {"hidden": "all-reduce"}),
        ("row", {"hidden": "all-reduce"}, {}),
    ]
    normed = result(module_analysis(Projections(norm=True), torch.randn(2, 5, 6)))
    assert normed.summary["hidden"]["calls"] == 0 and not any(r.split for r in normed.calls.values())  # kept whole


@pytest.mark.slow
@pytest.mark.parametrize("name", [*TRANSFORMERS, pytest.param("resnet18", marks=pytest.mark.sweep)])
def test_identical_layers_cost_the_same(name):
    analysis = zoo_analysis(name)
    summary = result(analysis).summary
    blocks = [layer for layer in numbered_layers(analysis) if layer != "layer2.0"]  # resnet's downsampling block differs
    for axis in ("batch", "sequence", "hidden"):
        assert len({summary[axis]["per_layer"].get(layer, 0) for layer in blocks}) == 1, axis


@pytest.mark.sweep  # resnet18: the zoo beyond its first model
def test_resnet_convolutions_mix_channels_as_hidden_and_space_as_sequence():
    analysis = zoo_analysis("resnet18")
    records = result(analysis)
    assert result(analysis).inputs == {"pixel_values": ("batch", "hidden", "sequence", "sequence")}
    convs = [records[c.index] for c in analysis.calls if c.target == "aten.convolution.default"]
    assert all("hidden" in r.mixes for r in convs)
    spatial = [r for r in convs if r.mixes == ("hidden", "sequence")]
    assert spatial and all(r.needs_comm["sequence"] == "halo-exchange" for r in spatial)
    assert all((r.split == "row") == ("hidden" in r.needs_comm) for r in convs)  # channels split as tensor parallelism does
    assert {r.split for r in convs} == {"column", "row"}
    assert any(r.mixes == ("hidden",) for r in convs)  # the 1x1 downsampling convolution is local in space
    assert result(analysis).summary["batch"]["calls"] == 0
    pooled = [records[c.index] for c in analysis.calls if c.target == "aten.mean.dim"]
    assert [r.needs_comm for r in pooled] == [{"sequence": "all-reduce"}]


class Elementwise(torch.nn.Module):
    def forward(self, x):
        return torch.sin(x) * 2 + torch.relu(x).unsqueeze(0).squeeze(0)


@pytest.mark.slow
def test_a_pure_elementwise_program_mixes_nothing():
    analysis = module_analysis(Elementwise(), torch.randn(2, 5, 6))
    found = result(analysis)
    assert all(not r.mixes and not r.needs_comm for r in found.calls.values())
    assert all(found.summary[axis]["calls"] == 0 for axis in ("batch", "sequence", "hidden"))
    assert found.axes(analysis.flow.outputs[0]) == [["batch"], ["sequence"], ["hidden"]]


class Reduce(torch.nn.Module):
    def __init__(self, dim: int, scan: bool = False):
        super().__init__()
        self.dim, self.scan = dim, scan

    def forward(self, x):
        return torch.cumsum(x, self.dim) if self.scan else x.sum(self.dim)


@pytest.mark.slow
@pytest.mark.parametrize(("dim", "axis"), [(-1, "hidden"), (1, "sequence"), (0, "batch")])
def test_a_reduction_mixes_exactly_the_axis_it_reduces(dim, axis):
    analysis = module_analysis(Reduce(dim), torch.randn(2, 5, 6))
    mixing = [result(analysis)[c.index] for c in analysis.calls if result(analysis)[c.index].mixes]
    cost = {} if axis == "hidden" else {axis: "all-reduce"}  # inputs are whole in hidden: only weights cut it
    assert [(r.mixes, r.needs_comm) for r in mixing] == [((axis,), cost)]


@pytest.mark.slow
def test_a_cumsum_along_the_sequence_is_a_scan_under_sequence_sharding():
    analysis = module_analysis(Reduce(1, scan=True), torch.randn(2, 5, 6))
    assert result(analysis).summary["sequence"]["kinds"] == {"scan": 1}


@pytest.mark.slow
@pytest.mark.parametrize(("kernel", "stride", "padding", "cost"), [(4, 4, 0, {}), (3, 1, 1, {"sequence": "halo-exchange"})])
def test_patch_convolutions_are_local_in_space_and_overlapping_ones_trade_halos(kernel, stride, padding, cost):
    conv = torch.nn.Conv2d(3, 8, kernel, stride=stride, padding=padding)
    analysis = module_analysis(conv, torch.randn(1, 3, 16, 16))
    (record,) = [result(analysis)[c.index] for c in analysis.calls if c.target == "aten.convolution.default"]
    assert record.mixes == ("hidden", "sequence")
    assert {axis: kind for axis, kind in record.needs_comm.items() if axis == "sequence"} == cost


class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(8, 8) for _ in range(3))

    def forward(self, x):
        b, s, _ = x.shape
        heads = lambda t: t.view(b, s, 2, 4).transpose(1, 2)  # noqa: E731
        return F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))


def test_fused_attention_at_training_level_gathers_the_sequence_and_keeps_heads_local():
    analysis = module_analysis(Attention(), torch.randn(2, 5, 8), level="training")
    (record,) = [result(analysis)[c.index] for c in analysis.calls if "scaled_dot_product" in c.target]
    assert record.mixes == ("hidden", "sequence") and record.needs_comm == {"sequence": "all-gather"}
    assert result(analysis).axes(analysis.flow.outputs[0]) == [["batch"], ["hidden"], ["sequence"], ["hidden"]]


class Flip(torch.nn.Module):
    def forward(self, x):
        return torch.flip(x, [1]).sum(-1)


@pytest.mark.slow
def test_an_op_without_a_rule_is_reported_and_costed_conservatively():
    analysis = module_analysis(Flip(), torch.randn(2, 5, 6))
    found = result(analysis)
    assert found.unknown_targets == ("aten.flip.default",)
    flip, total = (found[c.index] for c in analysis.calls if found[c.index].mixes)
    assert flip.unknown and flip.needs_comm == dict.fromkeys(("batch", "hidden", "sequence"), "unknown")
    assert set(total.needs_comm) == {"batch", "hidden", "sequence"}  # what follows an unknown op is cut everywhere
    assert any(line.startswith("coordinate: aten.flip.default mixes sequence (unknown op") for line in note_lines(analysis))


def note_lines(analysis: Analysis) -> list[str]:
    return [line for notes in coordinate_notes(analysis).values() for line in notes]


def test_views_keep_the_factors_so_splitting_heads_and_merging_tokens_round_trip():
    cut = lambda axis, n: (Factor(frozenset({axis}), n, frozenset({axis})),)  # noqa: E731
    tokens = (cut("batch", 2), cut("sequence", 16), cut("hidden", 64))
    merged = reshape(tokens, [32, 64])
    assert [f.axes for f in merged[0]] == [{"batch"}, {"sequence"}]
    heads = reshape(merged, [2, 16, 4, 16])
    assert [[f.axes for f in d] for d in heads] == [[{"batch"}], [{"sequence"}], [{"hidden"}], [{"hidden"}]]
    assert heads[2][0].sharded == {"hidden"} and heads[3][0].sharded == frozenset()  # shards hold whole heads
    back = reshape(heads, [2, 16, 64])
    assert [[f.axes for f in d] for d in back] == [[{"batch"}], [{"sequence"}], [{"hidden"}, {"hidden"}]]
    assert reshape((cut("sequence", 6), cut("hidden", 4)), [4, 6]) is None  # no common factoring: the view cuts a factor


def test_notes_and_json_name_the_attention_gather():
    analysis = zoo_analysis("gpt2")
    lines = note_lines(analysis)
    assert (
        f"coordinate: aten.bmm.default mixes sequence ({PAIRS}) -> sequence-sharding needs all-gather, reduce-scatter in backward" in lines
    )
    assert "coordinate: aten._softmax.default mixes sequence (softmax) -> local under sequence-sharding" in lines
    document = json.loads(json.dumps(coordination_json(result(analysis))))
    assert document["summary"]["sequence"]["per_layer"] == {"transformer.h.0": 2, "transformer.h.1": 2}
    assert all(call["mixes"] or call["needs_comm"] or call["backward_comm"] for call in document["calls"])


def test_named_input_axes_replace_the_default_and_unknown_names_are_rejected():
    flow = Analysis.of(lower(torch.export.export(Reduce(0), (torch.randn(5, 6),)))).flow
    assert coordinate(flow).inputs == {"x": ("batch", "sequence")}
    assert coordinate(flow, {"x": "sequence,hidden"}).summary["sequence"]["kinds"] == {"all-reduce": 1}
    with pytest.raises(BwskError, match="input %x: axes 'tokens,hidden'"):
        coordinate(flow, {"x": "tokens,hidden"})


def test_the_pass_is_fast_on_a_traced_model():
    analysis = zoo_analysis("pythia-70m")
    start = time.perf_counter()
    Coordinate().run(analysis)
    assert time.perf_counter() - start < 1.0
