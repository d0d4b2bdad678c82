"""The `memory` pass: its conventional prediction against autograd on the real module, and its plans.

The prediction probes each call on meta tensors; the measurement runs the eager
module on the CPU and counts the storages autograd saves (weights excluded).
Models are lowered at the training level (the composite operators eager runs
are kept, so the prediction is exact); gpt2 and pythia are also checked at the
Core ATen level, where decompositions make the prediction slightly high.
"""

from __future__ import annotations

import functools
import json
import re

import pytest
import torch
from paths import EXAMPLES
from zoo_exports import tiny_compiled

from bwsk.ir.parser import parse, parse_file
from bwsk.passes.analysis import Analysis
from bwsk.passes.couple import Couple
from bwsk.passes.manager import PassManager
from bwsk.passes.memory import MODES, Memory, replay
from bwsk.passes.memory.saved_tensors import measure, probe
from bwsk.render.notes import memory_notes
from bwsk.render.report import memory_json

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out

MODELS = [
    ("gpt2", "training"),
    ("gpt2", "core"),
    pytest.param("bert-base", "training", marks=pytest.mark.sweep),
    pytest.param("resnet18", "training", marks=pytest.mark.sweep),
    ("pythia-70m", "training"),
    ("pythia-70m", "core"),
]

S_ONLY = """program "s_only" level="hand"

input %x : f32[4, 8]

param @w : f32[8, 8]
param @b : f32[4, 8]

%h : f32[4, 8] = aten.tanh.default(aten.mm.default(%x, @w))
%y : f32[4, 8] = aten.exp.default(aten.add.Tensor(%h, @b))

output %y : f32[4, 8]
"""


def analyzed(program, passes: tuple[type, ...] = (Memory,), **sizes: int) -> Analysis:
    analysis = Analysis.of(program, sizes=sizes or None)
    PassManager(passes).run(analysis)
    return analysis


@functools.cache
def model_analysis(name: str, level: str) -> Analysis:
    return analyzed(tiny_compiled(name, level, device="cpu").program)


def test_probe_matches_saved_operands_outputs_and_buffers():
    x, w, b = (torch.empty(shape, device="meta", requires_grad=True) for shape in ((2, 8), (8,), (8,)))
    _, saves = probe(lambda: torch.ops.aten.layer_norm.default(x, [8], w, b), [x, w, b])
    assert 0 in saves.operands and saves.outputs == ()
    assert sorted(saves.extra) == [8, 8]  # mean and rstd: one f32 per row
    _, saves = probe(lambda: torch.ops.aten.softmax.int(x, -1), [x])
    assert (saves.operands, saves.outputs, saves.extra) == ((), (0,), ())


def test_measure_counts_activations_not_weights():
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
    x = torch.randn(4, 8)
    measured = measure(module, (x,))
    assert measured.bytes == x.nbytes + 4 * 16 * 4  # the linear's input and the relu's output
    assert measured.storages == 2


@pytest.mark.parametrize(("name", "level"), MODELS)
def test_conventional_prediction_matches_autograd(name: str, level: str):
    source = tiny_compiled(name, level, device="cpu")
    measured = measure(source.source.module, source.example_inputs)
    predicted = model_analysis(name, level).result(Memory).modes["conventional"].total
    assert abs(predicted - measured.bytes) <= 0.10 * measured.bytes, (predicted, measured)


@pytest.mark.parametrize(("name", "level"), MODELS)
def test_modes_order_and_every_saved_storage_has_one_decision(name: str, level: str):
    analysis = model_analysis(name, level)
    result = analysis.result(Memory)
    modes = result.modes
    assert modes["checkpoint"].total < modes["conventional"].total
    assert modes["analyzed"].total <= modes["conventional"].total
    saved = {s for storages in replay(analysis).saved.values() for s in storages}
    storages = [d.storage for d in result.decisions if d.storage is not None]
    assert len(storages) == len(set(storages))
    assert {d.storage for d in result.decisions if d.saved and d.storage is not None} == saved
    assert sum(d.bytes for d in result.decisions if d.saved) == modes["conventional"].total
    assert all(d.decision in ("store", "recompute") and d.decision == d.analyzed for d in result.decisions)
    assert modes["reversible"] == modes["analyzed"]  # no couple result: nothing is inverted
    assert sum(layer.saved for layer in result.layers) == modes["conventional"].total


def test_program_without_k_calls_recomputes_everything_but_its_inputs():
    analysis = analyzed(parse(S_ONLY))
    assert all(c.kind == "S" for c in analysis.classes.values())
    decisions = analysis.result(Memory).decisions
    assert {d.name for d in decisions if d.decision == "store"} == {"%x"}
    assert {d.name for d in decisions if d.decision == "recompute"} == {"%h", "%y"}
    analyzed_mode = analysis.result(Memory).modes["analyzed"]
    assert (analyzed_mode.stored, analyzed_mode.peak) == (4 * 8 * 4, 2 * 4 * 8 * 4)


def test_k_barrier_output_is_stored():
    analysis = analyzed(parse_file(str(EXAMPLES / "mlp.bwsk")), batch=4)
    relu = next(d for d in analysis.result(Memory).decisions if d.name == "%h")
    assert relu.decision == "store" and relu.reason.startswith("K-barrier output")


def test_coupling_inverts_the_stream_and_keeps_stored_bytes_flat_in_depth():
    stored = []
    for layers in (2, 3):
        analysis = analyzed(tiny_compiled("gpt2", "training", layers=layers).program, (Couple, Memory))
        result = analysis.result(Memory)
        assert any(d.decision == "invert" for d in result.decisions)
        assert result.modes["reversible"].total < result.modes["analyzed"].total
        stored.append((result.modes["reversible"].stored, result.modes["analyzed"].stored))
    assert stored[0][0] == stored[1][0] and stored[0][1] < stored[1][1]


def test_notes_and_json():
    analysis = model_analysis("gpt2", "training")
    notes = memory_notes(analysis)
    lines = [line for group in notes.values() for line in group]
    assert lines[0].startswith("memory: activation bytes for backward: conventional ")
    pattern = re.compile(r"memory: (store|recompute|invert) \S.* \((\S.*, )?[\d,]+ B\): \S")
    assert all(pattern.match(line) for line in lines[1:]), [line for line in lines[1:] if not pattern.match(line)][:3]
    payload = json.loads(json.dumps(memory_json(analysis.result(Memory))))
    assert set(payload["modes"]) == set(MODES)
    assert payload["modes"]["conventional"]["total"] == analysis.result(Memory).modes["conventional"].total
