"""Pass infrastructure, the classify and couple passes on real models, JSON and text outputs."""

from __future__ import annotations

import io
import json

import jsonschema
import pytest
import torch
from paths import GOLDEN, ROOT
from zoo_exports import tiny_program, zoo_sweep

import bwsk
from bwsk.cli.compile import main, printer_after
from bwsk.errors import BwskError
from bwsk.frontend.compile import state_tensors
from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.ir.program import Definition
from bwsk.ir.terms import Ref
from bwsk.passes.analysis import Analysis, Pass, layer_of
from bwsk.passes.classify import Classify
from bwsk.passes.couple import Couple
from bwsk.passes.manager import PASSES, PassError, PassManager, complete
from bwsk.passes.pipeline import analyze
from bwsk.render.report import analysis_json

MLP = (ROOT / "grammar/examples/mlp.bwsk").read_text()
RESIDUAL = (ROOT / "grammar/examples/residual.bwsk").read_text()


@pytest.fixture(scope="module")
def pythia():
    return analyze(tiny_program("pythia-70m"), passes=["classify", "partition", "couple"])


def test_pipelines_are_completed_with_required_passes_in_order():
    assert [p.name for p in complete(["partition"])] == ["classify", "partition"]
    assert [p.name for p in complete(["couple", "partition", Classify])] == ["couple", "classify", "partition"]
    with pytest.raises(BwskError, match="unknown pass 'nope'"):
        complete(["nope"])


def test_every_pass_the_package_defines_is_listed_by_its_name():
    defined = {cls for cls in Pass.__subclasses__() if cls.__module__.startswith("bwsk.passes.")}
    assert set(PASSES.values()) == defined
    assert all(PASSES[cls.name] is cls for cls in defined)


def test_a_result_is_read_by_its_pass_and_a_missing_one_names_the_pass_to_run():
    analysis = analyze(parse(MLP), passes=[Classify])
    assert analysis.result(Classify).overall.calls == len(analysis.calls)
    assert analysis.get(Couple) is None
    with pytest.raises(KeyError, match="run the 'couple' pass first"):
        analysis.result(Couple)


class _Requires(Pass):
    name = "test-requires-itself"
    requires = ("test-requires-itself",)


def test_a_requirement_cycle_is_named(monkeypatch):
    monkeypatch.setitem(PASSES, _Requires.name, _Requires)
    with pytest.raises(BwskError, match="cycle: test-requires-itself -> test-requires-itself"):
        complete([_Requires])


class _Breaks(Pass):
    name = "test-breaks"

    def run(self, analysis):
        raise ZeroDivisionError("boom")


class _Corrupts(Pass):
    name = "test-corrupts"

    def run(self, analysis):
        bad = Definition("broken", Ref("value", "nowhere"))
        analysis.program = analysis.program.with_defs([*analysis.program.defs, bad])


@pytest.mark.parametrize("broken, message", [(_Breaks, "boom"), (_Corrupts, "undefined name: %nowhere")])
def test_the_failing_pass_is_named_and_the_verifier_runs_after_each_pass(broken, message):
    with pytest.raises(PassError, match=rf"pass '{broken.name}' failed: .*{message}"):
        PassManager(["classify", broken]).run(Analysis.of(parse(MLP)))


def test_print_after_annotates_the_program_and_still_parses():
    stream = io.StringIO()
    PassManager(["partition"]).run(Analysis.of(parse(RESIDUAL)), printer_after(["partition"], ["classify"], stream))
    text = stream.getvalue()
    assert "# classify: aten.relu.default K: zeroes the negative half-line" in text
    body = text.split("----\n", 1)[1]
    assert parse(body) == parse(RESIDUAL)


def test_a_pass_that_keeps_the_program_costs_no_verification(monkeypatch):
    calls = []
    monkeypatch.setattr("bwsk.passes.manager.verify", lambda program: calls.append(program))
    PassManager(["classify"]).run(Analysis.of(parse(MLP)))
    assert calls == []
    analysis = PassManager([_Corrupts]).run(Analysis.of(parse(MLP)))
    assert calls == [analysis.program]


def test_passes_never_write_to_the_terminal(capsys):
    analyze(parse(RESIDUAL))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.slow
def test_old_research_code_errors_are_corrected_on_a_real_model(pythia):
    kinds = {}
    for call in pythia.calls:
        kinds.setdefault(call.target, set()).add(pythia.classes[call.index].kind)
    assert kinds["aten.native_layer_norm.default"] == {"K"}  # LayerNorm erases (the old table said preserving)
    assert kinds["aten._softmax.default"] == {"K"}  # attention softmax was invisible to the old table
    assert kinds["aten.view.default"] == {"S"}
    assert "K" in kinds["aten.slice.Tensor"]  # slicing that drops elements erases
    down = [c for c in pythia.calls if c.target == "aten.addmm.default" and "dense_4h_to_h" in c.module]
    assert down and all(pythia.classes[c.index].kind == "K" for c in down)  # a down-projection erases


@pytest.mark.slow
@pytest.mark.parametrize("level", ["core", "training"])
@pytest.mark.parametrize("name", zoo_sweep())
def test_every_zoo_operator_has_a_rule(name, level):
    assert analyze(tiny_program(name, level), passes=[Classify]).result(Classify).unknown_targets == ()


def test_shares_are_consistent_with_the_per_op_records(pythia):
    document = analysis_json(pythia)
    ops = document["ops"]
    s_ops = sum(op["class"] == "S" for op in ops)
    assert document["summary"]["s_ratio_ops"] == pytest.approx(s_ops / len(ops))
    s_flops = sum(op["flops"] for op in ops if op["class"] == "S")
    assert document["summary"]["s_ratio_flops"] == pytest.approx(s_flops / sum(op["flops"] for op in ops))
    assert {op["layer"] for op in ops} >= {"gpt_neox.layers.0", "gpt_neox.layers.1"}


def test_json_validates_against_the_documented_schema(pythia):
    schema = json.loads((ROOT / "docs/analysis.schema.json").read_text())
    document = json.loads(json.dumps(analysis_json(pythia)))
    jsonschema.validate(document, schema)
    phase_ops = [name for phase in document["phases"] for name in phase["ops"]]
    assert sorted(phase_ops) == sorted(op["name"] for op in document["ops"])


def test_parallel_residuals_become_coupling_candidates(pythia):
    couplings = pythia.result(Couple)
    assert [c.kind for c in couplings] == ["parallel", "parallel"]
    assert all("mlp" in c.f and "attention" in c.g for c in couplings)
    assert all(c.activation_bytes > 0 and c.rebuild_flops > 0 for c in couplings)


@pytest.mark.slow
def test_sequential_residual_pairs_become_coupling_candidates():
    couplings = analyze(tiny_program("gpt2"), passes=[Couple]).result(Couple)
    assert [c.kind for c in couplings] == ["sequential", "sequential"]
    assert [layer_of(c.residuals[0].rsplit(".", 1)[0]) for c in couplings] == ["transformer.h.0", "transformer.h.1"]


@pytest.mark.parametrize("emit", ["phases", "json"])
def test_golden_outputs_of_the_residual_example(emit, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the golden text names the file as given
    code = main(["grammar/examples/residual.bwsk", "--emit", emit, "--passes", "classify,partition,couple"])
    out, err = capsys.readouterr()
    assert code == 0, err
    golden = GOLDEN / f"residual.{emit}.txt"
    assert out == golden.read_text(), f"regenerate {golden} if the change is intended"


def test_golden_print_after_classify_of_the_mlp_example(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the golden text names the file as given
    code = main(["grammar/examples/mlp.bwsk", "--passes", "classify", "--print-after", "classify"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == (GOLDEN / "mlp.print-after-classify.txt").read_text()
    assert out == print_program(parse(MLP))


class _Square(torch.nn.Module):
    def __init__(self, rank: int):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(4, rank) @ torch.randn(rank, 4))

    def forward(self, x):
        return self.linear(x)


@pytest.mark.slow
@pytest.mark.parametrize("rank, kind", [(4, "S"), (2, "K")])
def test_weight_conditions_are_checked_on_the_actual_weights(rank, kind):
    ep = torch.export.export(_Square(rank), (torch.randn(3, 4),))
    program = bwsk.lower(ep)
    weights = state_tensors(ep.run_decompositions())
    without = analyze(program, passes=["classify"])
    with_weights = analyze(program, passes=["classify"], weights=weights)
    (linear,) = [c for c in without.calls if c.target == "aten.addmm.default"]
    assert without.classes[linear.index].kind == "S" and without.classes[linear.index].condition
    verdict = with_weights.classes[linear.index]
    assert verdict.kind == kind
    assert verdict.checked == f"rank {rank} of 4"
