"""Which families convert and why the others are refused: OPT (sequential pre-norm, functional dropout, a flattened MLP
residual) converts; layers whose parallel halves share one norm, or whose sub-module adds the residual itself, are refused
in one line that says why and what would make them convertible."""

from __future__ import annotations

import pytest
import torch
import transformers
from training.gradient_check import FP32_RTOL, assert_same_gradients, batch, gradients
from training.tiny_models import tiny_model

from bwsk.training.reversible.convert import make_reversible, reversible_runtime
from bwsk.training.reversible.errors import ConversionError

SMALL = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
SHARED_NORM = {
    "phi": ("PhiConfig", "PhiForCausalLM", dict(SMALL, intermediate_size=64), "model.layers.0.input_layernorm"),
    "gptj": ("GPTJConfig", "GPTJForCausalLM", dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, rotary_dim=4), "transformer.h.0.ln_1"),
    "falcon": ("FalconConfig", "FalconForCausalLM", SMALL, "transformer.h.0.input_layernorm"),
    "stablelm-parallel": (
        "StableLmConfig",
        "StableLmForCausalLM",
        dict(SMALL, intermediate_size=64, num_key_value_heads=4, use_parallel_residual=True),
        "model.layers.0.input_layernorm",
    ),
}


def built(config_class: str, model_class: str, values: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(transformers, model_class)(getattr(transformers, config_class)(**values))


@pytest.mark.slow
def test_opt_converts_with_its_functional_dropouts_and_trains_like_plain_autograd():
    model = make_reversible(tiny_model("opt", dropout=0.3)).train()
    layer = reversible_runtime(model).report.layers[0]
    assert [(s.path, s.dropout) for s in layer.f] == [
        ("model.decoder.layers.0.self_attn_layer_norm", None),
        ("model.decoder.layers.0.self_attn", None),
        ("model.decoder.layers.0", 0.3),  # nn.functional.dropout in the layer's own code, after the attention
    ]
    assert [s.path.rsplit(".", 1)[1] for s in layer.g] == ["final_layer_norm", "fc1", "activation_fn", "fc2", "0"]
    assert layer.g[-1].dropout == 0.3
    loss, got = gradients(model, [batch()], plain=False)
    _, want = gradients(model, [batch()], plain=True)
    assert_same_gradients(model, got, want, FP32_RTOL)
    without, _ = gradients(model.eval(), [batch()], plain=False)
    assert without != pytest.approx(loss, rel=1e-6), "the dropout steps drop in training only"


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SHARED_NORM))
def test_parallel_halves_sharing_one_norm_are_refused_saying_why(family):
    config_class, model_class, values, norm = SHARED_NORM[family]
    with pytest.raises(ConversionError) as refused:
        make_reversible(built(config_class, model_class, values))
    message = str(refused.value)
    assert "\n" not in message
    assert f"both read the output of {norm} (parallel halves sharing one norm): F and G would read the same normalised input" in message
    assert "a norm per half" in message, "it says what would make it convertible"


@pytest.mark.slow
def test_a_sub_module_that_adds_the_residual_itself_is_refused_saying_why():
    model = built("BloomConfig", "BloomForCausalLM", dict(vocab_size=128, hidden_size=32, n_layer=2, n_head=4))
    with pytest.raises(ConversionError) as refused:
        make_reversible(model)
    assert str(refused.value) == (
        "cannot make transformer.h.0 reversible: it passes transformer.h.0.self_attention positional arguments besides the hidden "
        "state (a sub-module given the residual adds it itself): F and G must be sub-module calls that return only their update"
    )


@pytest.mark.slow
def test_a_layer_returning_a_tuple_converts():
    """Falcon with sequential attention and MLP: its layers return (hidden, attention weights) and add the residual with a
    functional dropout; the converted layers return the same structure."""
    model = make_reversible(built("FalconConfig", "FalconForCausalLM", dict(SMALL, parallel_attn=False, hidden_dropout=0.2)))
    layer = reversible_runtime(model).report.layers[1]
    assert layer.outputs == 2 and layer.g[-1].dropout == 0.2
    model.train()
    _, got = gradients(model, [batch()], plain=False)
    _, want = gradients(model, [batch()], plain=True)
    assert_same_gradients(model, got, want, FP32_RTOL)
