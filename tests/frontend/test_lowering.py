"""Lowering torch.export programs into the IR: faithful, structured, round-trippable."""

from __future__ import annotations

import re

import pytest
import torch
from zoo_exports import sweep_after_first, tiny_compiled, tiny_program, zoo_sweep

from bwsk.errors import LoweringError
from bwsk.frontend.compile import compile_source, lower, state_tensors
from bwsk.frontend.faithfulness import faithfulness
from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.ir.terms import App, Comb, Ref, spine

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out


@pytest.mark.parametrize("name", zoo_sweep())
def test_every_zoo_model_lowers_prints_parses_and_matches_its_export(name):
    compiled = tiny_compiled(name, device="cpu")
    text = print_program(compiled.program)
    assert parse(text) == compiled.program
    assert print_program(parse(text)) == text
    report = faithfulness(compiled)
    assert report.ok, report
    assert report.max_rel <= 1e-5


@pytest.mark.parametrize("name", sweep_after_first(["pythia-70m", "gpt2", "smollm-135m", "bert-base", "resnet18"]))
def test_residual_blocks_read_as_S_terms(name):
    program = tiny_program(name)
    residuals = []
    for definition in program.defs:
        head, args = spine(definition.term)
        if head is Comb("S") and len(args) == 3 and isinstance(args[1], Ref) and args[1].name.endswith("branch"):
            residuals.append(definition.name)
    assert len(residuals) >= 2, residuals


@pytest.mark.parametrize("name", zoo_sweep())
def test_every_zoo_model_lowers_at_the_training_level_too(name):
    """Grad-mode wrappers (e.g. rotary embeddings under no_grad) are inlined, so every model lowers."""
    compiled = tiny_compiled(name, "training", device="cpu")
    assert compiled.program.attr("level") == "training"
    assert "wrap_with" not in print_program(compiled.program)
    assert faithfulness(compiled).ok


def test_training_level_is_recorded_and_faithful():
    compiled = tiny_compiled("gpt2", "training", device="cpu")
    assert compiled.program.attr("level") == "training"
    ops = {m.group(1) for m in re.finditer(r"(aten\.[a-z_0-9]+\.[A-Za-z_0-9]+)", print_program(compiled.program))}
    assert "aten.linear.default" in ops  # not decomposed at the training level
    assert faithfulness(compiled).ok


def test_dynamic_batch_prints_a_symbolic_dimension_and_evaluates_at_two_sizes():
    compiled = compile_source("pythia-70m", tiny=True, layers=1, device="cpu", seq=8, dynamic_batch=True, progress=False)
    program = compiled.program
    (batch, seq) = program.inputs[0].type.shape
    assert isinstance(batch, str) and seq == 8
    assert f"input %input_ids : i64[{batch}, 8]" in print_program(program)
    for size in (1, 5):
        ids = torch.randint(0, 64, (size, 8))
        expected = compiled.exported.module()(ids)
        got = program(ids, params=compiled.state)
        assert got.shape[0] == size
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_tied_weight_stays_one_reference():
    compiled = tiny_compiled("smollm-135m", device="cpu")
    text = print_program(compiled.program)
    tied = [s.name for s in compiled.program.state if "embed_tokens" in s.name or "lm_head" in s.name]
    assert len(tied) == 1, tied
    assert text.count(f"@{tied[0]}") >= 3  # declared once, read by the embedding and by the head
    assert faithfulness(compiled).ok


class _Branchy(torch.nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (x,))


def test_an_operator_the_evaluator_cannot_run_is_an_error_naming_it():
    ep = torch.export.export(_Branchy(), (torch.randn(3),))
    with pytest.raises(LoweringError, match="cond"):
        lower(ep)


class _Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(6, 6)

    def forward(self, x):
        return x + torch.relu(self.inner(x))


def test_lowering_an_export_directly_keeps_state_names_and_is_exact():
    model = _Residual()
    x = torch.randn(4, 6)
    ep = torch.export.export(model, (x,))
    program = lower(ep, name="residual")
    assert {s.name for s in program.state} == {"inner.weight", "inner.bias"}
    got = program(x, params=state_tensors(ep.run_decompositions()))
    torch.testing.assert_close(got, model(x), rtol=0, atol=0)
    add = program.defs[-1]
    head, args = spine(add.term)
    assert head is Comb("S") and isinstance(args[1], Ref)
    assert isinstance(add.term, App)
