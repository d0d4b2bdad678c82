"""The `seams` pass finds each coupling's seam norms in the IR; `codegen.emit_model` of them writes a module whose kernels are correct."""

import pytest
import torch
from seam_checks import check_against_reference, operands
from zoo_exports import tiny_program

import bwsk
from bwsk.kernels import cache, codegen, runtime
from bwsk.kernels.patterns import SeamPattern
from bwsk.passes.couple import Couple
from bwsk.passes.seams import find_seams

LAYERNORM = SeamPattern("add", "layernorm", True, True, 1e-5)
RMSNORM = SeamPattern("add", "rmsnorm", True, False, 1e-5)


def analysed(model: str, level: str):
    """The tiny model's analysis, from the export the session shares (tests/zoo_exports.py)."""
    return bwsk.analyze(tiny_program(model, level))


@pytest.mark.slow
@pytest.mark.parametrize("level", ["core", "training"])
def test_pythia_seams_are_layer_norms_of_the_consumer(level):
    analysis = analysed("pythia-70m", level)
    seams = find_seams(analysis, analysis.result(Couple))
    assert [(s.block, s.stream) for s in seams] == [(f"gpt_neox.layers.{i}", stream) for i in (0, 1) for stream in ("y1", "y2")]
    assert {s.pattern for s in seams} == {LAYERNORM}
    # The parallel residual's G half (attention) starts with input_layernorm; y2 feeds the next block's F (the MLP) or the final norm.
    assert [s.weight for s in seams] == [
        "@gpt_neox.layers.0.input_layernorm.weight",
        "@gpt_neox.layers.1.post_attention_layernorm.weight",
        "@gpt_neox.layers.1.input_layernorm.weight",
        "@gpt_neox.final_layer_norm.weight",
    ]
    assert all(s.bias == s.weight.replace(".weight", ".bias") for s in seams)


@pytest.mark.slow
@pytest.mark.parametrize("level", ["core", "training"])
def test_smollm_seams_are_rms_norms_recognised_from_their_arithmetic(level):
    analysis = analysed("smollm-135m", level)
    seams = find_seams(analysis, analysis.result(Couple))
    assert {s.pattern for s in seams} == {RMSNORM}
    assert [s.weight for s in seams] == [
        "@model.layers.0.post_attention_layernorm.weight",
        "@model.layers.1.input_layernorm.weight",
        "@model.layers.1.post_attention_layernorm.weight",
        "@model.norm.weight",
    ]
    assert all(s.bias is None for s in seams)


@pytest.mark.slow
@pytest.mark.parametrize("model, pattern", [("pythia-70m", LAYERNORM), ("smollm-135m", RMSNORM)])
def test_emitted_module_imports_and_its_kernels_match_the_reference(model, pattern):
    analysis = analysed(model, "core")
    seams = find_seams(analysis, analysis.result(Couple))
    text = codegen.emit_model(analysis.program.name, seams)
    assert text.count("@triton.jit") == 3
    assert all(f"#   {model} {seam.block} ({seam.stream})\n" in text for seam in seams)
    module = cache.load(text)
    assert list(module.PATTERNS) == [pattern.name]
    kernels = runtime.kernels_in(module, pattern)
    for direction in ("forward", "rebuild"):
        seam = lambda x, f, w, b, direction=direction: _apply(kernels, direction, x, f, w, b)  # noqa: E731
        check_against_reference(pattern, direction, seam, operands(pattern, (2, 5, 64), torch.float32, torch.float16, seed=4))


def _apply(kernels, direction, x, f, weight, bias):
    return runtime.SeamFunction.apply(kernels, direction, x, f, weight, bias)
