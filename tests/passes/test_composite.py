"""Shared-ancestor composites: non-injective compositions become K with a reason, injective ones stay S; levels agree."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from lambda_module import Lambda
from torch import nn
from zoo_exports import sweep_after_first, tiny_program

import bwsk
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify import Classify
from bwsk.passes.classify.composite import GELU_TANH, SILU, SQUARE
from bwsk.passes.manager import PassManager


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary(nn.Module):
    """The Hugging Face rotary embedding: q*cos + rotate_half(q)*sin with angles cat(freqs, freqs)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, width, 2).float() / width))

    def forward(self, q):
        positions = torch.arange(q.shape[-2], dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq[None, :]
        angle = torch.cat((freqs, freqs), dim=-1)
        return q * angle.cos() + rotate_half(q) * angle.sin()


def verdicts(fn_or_module, shape=(4, 8), level: str = "core") -> dict[str, list[tuple[str, str]]]:
    module = fn_or_module if isinstance(fn_or_module, nn.Module) else Lambda(fn_or_module)
    program = bwsk.lower_module(module, (torch.randn(*shape),), level=level)
    analysis = PassManager([Classify]).run(Analysis.of(program))
    found: dict[str, list[tuple[str, str]]] = {}
    for call in analysis.calls:
        verdict = analysis.classes[call.index]
        found.setdefault(call.target, []).append((verdict.kind, verdict.reason))
    return found


@pytest.mark.parametrize("witness", [SILU, GELU_TANH, SQUARE])
def test_stated_witnesses_collide(witness):
    a, b = torch.tensor(witness.a, dtype=torch.float64), torch.tensor(witness.b, dtype=torch.float64)
    assert witness.a != witness.b
    assert math.isclose(float(witness.formula(a)), float(witness.formula(b)), abs_tol=1e-12)


@pytest.mark.parametrize(
    ("fn", "target", "says"),
    [
        (lambda x: x * x, "aten.mul.Tensor", "x*x is not injective"),
        (lambda x: x - x, "aten.sub.Tensor", "x - x is always 0"),
        (lambda x: x @ x.T, "aten.mm.default", "orthogonal"),  # 8x4 @ 4x8: each operand alone is injective
        (lambda x: x * torch.sigmoid(x), "aten.mul.Tensor", "x*sigmoid(x) is not injective (silu(-0.5) = silu(-2.50881))"),
        (lambda x: x + torch.tanh(x), "aten.add.Tensor", "not injective in general"),
    ],
)
@pytest.mark.slow
def test_operands_sharing_an_ancestor_are_k_with_the_reason(fn, target, says):
    found = verdicts(fn, shape=(8, 4))[target]
    assert [kind for kind, _ in found] == ["K"]
    assert "operands share ancestor %x" in found[0][1] and says in found[0][1]


@pytest.mark.slow
def test_silu_is_k_at_both_levels():
    core = verdicts(nn.SiLU(), level="core")
    training = verdicts(nn.SiLU(), level="training")
    assert core["aten.sigmoid.default"][0][0] == "S" and core["aten.mul.Tensor"][0][0] == "K"
    assert training["aten.silu.default"][0][0] == "K"


@pytest.mark.slow
def test_gelu_tanh_form_is_k_at_its_product_and_its_cubic_is_s():
    found = verdicts(lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))))
    products = [(kind, reason) for kind, reason in found["aten.mul.Tensor"] if kind == "K"]
    assert len(products) == 1 and "GELU, tanh form" in products[0][1]
    kinds = {kind for kind, reason in found["aten.add.Tensor"] if "strictly increasing" in reason}
    assert kinds == {"S"}


@pytest.mark.slow
def test_rotary_embedding_is_injective_as_a_whole():
    found = verdicts(Rotary(), shape=(2, 3, 5, 8))
    rotary = [(target, kind) for target, items in found.items() for kind, reason in items if reason.startswith("rotary embedding")]
    assert Counter(t for t, _ in rotary) == Counter(
        {"aten.slice.Tensor": 2, "aten.mul.Tensor": 2, "aten.neg.default": 1, "aten.cat.default": 1, "aten.add.Tensor": 1}
    )
    assert {kind for _, kind in rotary} == {"S"}


@pytest.mark.slow
def test_rotation_by_angles_with_unequal_halves_is_not_proved():
    class Skewed(Rotary):
        def forward(self, q):
            angle = torch.cat((self.inv_freq, 2 * self.inv_freq))
            return q * angle.cos() + rotate_half(q) * angle.sin()

    found = verdicts(Skewed(), shape=(3, 8))
    assert [kind for kind, _ in found["aten.slice.Tensor"]] == ["K", "K"]
    assert not any(reason.startswith("rotary") for items in found.values() for _, reason in items)


def test_decomposed_rms_norm_erases_at_its_mean():
    found = verdicts(lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert [kind for kind, _ in found["aten.mean.dim"]] == ["K"]


def layer_summary(name: str, level: str) -> dict[str, tuple[int, float]]:
    """Per numbered layer: the number of K calls and the S share by FLOPs."""
    analysis = PassManager([Classify]).run(Analysis.of(tiny_program(name, level)))
    result = analysis.result(Classify)
    barriers = Counter(analysis.layer(c) for c in analysis.calls if analysis.classes[c.index].kind == "K")
    return {layer: (barriers[layer], share.by_flops) for layer, share in result.per_layer.items() if layer[-1].isdigit()}


@pytest.mark.slow
@pytest.mark.parametrize("name", sweep_after_first(["pythia-70m", "gpt2", "smollm-135m"]))
def test_core_and_training_levels_agree_per_layer(name):
    core, training = layer_summary(name, "core"), layer_summary(name, "training")
    assert core.keys() == training.keys() and core
    for layer in core:
        assert core[layer][0] == training[layer][0], f"{layer}: K calls {core[layer][0]} (core) vs {training[layer][0]} (training)"
        assert abs(core[layer][1] - training[layer][1]) < 0.01, (
            f"{layer}: S share by FLOPs {core[layer][1]:.3f} vs {training[layer][1]:.3f}"
        )
