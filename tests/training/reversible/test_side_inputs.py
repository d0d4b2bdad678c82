"""Each reversible block runs with its own layer's side inputs (mask, sliding window, rotary embedding), found from what the
model calls each layer with; what cannot be determined is refused in one line naming the layer and the input."""

from __future__ import annotations

import pytest
import torch
import transformers
from training.gradient_check import FP32_RTOL, assert_same_gradients, batch, gradients
from training.tiny_models import tiny_model

from bwsk.training.reversible.convert import make_reversible
from bwsk.training.reversible.errors import ConversionError
from bwsk.training.reversible.function import SideInputs

MIXED = ["sliding_attention", "full_attention"]
SLIDING = ["sliding_attention", "sliding_attention"]


def qwen2(layer_types: list[str], **options) -> torch.nn.Module:
    """A Qwen2 whose layers attend in windows of 4 tokens or fully, as `layer_types` says (its config's other defaults)."""
    return tiny_model("qwen2", layer_types=layer_types, use_sliding_window=True, sliding_window=4, **options)


def attention_masks(model: torch.nn.Module, ids: torch.Tensor) -> dict[int, torch.Tensor | None]:
    """The attention mask each layer's attention module receives first during one forward (gradients on)."""
    seen: dict[int, torch.Tensor | None] = {}

    def hook(index: int):
        def record(module, args, kwargs):
            seen.setdefault(index, kwargs.get("attention_mask"))

        return record

    handles = [layer.self_attn.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(model.model.layers)]
    try:
        model(ids, labels=ids).loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.slow
def test_each_block_sees_its_own_layers_mask():
    ids = batch(size=(2, 12))
    original = qwen2(MIXED)
    expected = attention_masks(original, ids)
    assert expected[0] is not None and expected[1] is None, "sdpa: a window mask for the sliding layer, none (causal) for the full one"
    converted = make_reversible(original)
    got = attention_masks(converted, ids)
    assert torch.equal(got[0], expected[0]) and got[1] is None

    sliding = make_reversible(qwen2(SLIDING))
    sliding.load_state_dict(converted.state_dict())
    with torch.no_grad():
        mixed_logits, sliding_logits = converted.eval()(ids).logits, sliding.eval()(ids).logits
    assert not torch.allclose(mixed_logits, sliding_logits, atol=1e-4), "the full-attention block does not get the window mask"

    converted.train()
    _, got_grads = gradients(converted, [ids], plain=False)
    _, want = gradients(converted, [ids], plain=True)
    assert_same_gradients(converted, got_grads, want, FP32_RTOL)


@pytest.mark.slow
def test_mixed_layer_types_generate_with_the_cache_as_without():
    model = make_reversible(qwen2(MIXED)).eval()
    prompt = batch(size=(1, 6))
    cached = model.generate(prompt, max_new_tokens=8, do_sample=False)  # past the window of 4: the sliding cache rolls
    uncached = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_shared_side_tensors_are_one_function_input():
    mask, cos = torch.ones(2, 2), torch.zeros(3)
    sides = [{"mask": mask, "rotary": (cos, cos), "window": 4}, {"mask": None, "rotary": (cos, cos), "window": None}]
    structure, tensors = SideInputs.split(sides)
    assert len(tensors) == structure.count == 2 and tensors[0] is mask and tensors[1] is cos
    fresh = [torch.full((2, 2), 5.0), torch.full((3,), 7.0)]
    joined = structure.join(fresh)
    assert joined[0]["mask"] is fresh[0] and joined[1]["rotary"][0] is fresh[1] and joined[1]["rotary"][1] is fresh[1]
    assert joined[0]["window"] == 4 and joined[1]["mask"] is None


@pytest.mark.slow
def test_a_hidden_state_changed_between_layers_is_refused():
    model = make_reversible(tiny_model("neox-parallel"), measure_gap=False)
    model.gpt_neox.layers[0].register_forward_hook(lambda module, args, output: output * 1.0)
    with pytest.raises(ConversionError) as refused:
        model(batch())
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot run gpt_neox.layers.1 in the reversible stack: its hidden state is not the one gpt_neox.layers.0 received"
    )


@pytest.mark.slow
def test_a_side_input_that_is_the_hidden_state_is_refused_naming_layer_and_input():
    model = make_reversible(tiny_model("llama"), measure_gap=False)

    def pass_hidden(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return args, {**kwargs, "residual": hidden}

    model.model.layers[1].register_forward_pre_hook(pass_hidden, with_kwargs=True)
    with pytest.raises(
        ConversionError, match=r"cannot run model\.layers\.1 in the reversible stack: its side input 'residual' is the hidden state"
    ):
        model(batch())
    model.model.layers[1]._forward_pre_hooks.clear()
    assert model(batch()).logits.isfinite().all(), "a refused call leaves nothing behind: the next forward runs"


@pytest.mark.slow
def test_gemma2_alternating_windows_train_and_generate_with_each_layers_mask():
    torch.manual_seed(0)
    config = transformers.Gemma2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, sliding_window=4, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    original = transformers.Gemma2ForCausalLM(config)
    assert config.layer_types == MIXED
    ids = batch(size=(2, 10))
    expected = attention_masks(original, ids)
    model = make_reversible(original)
    got = attention_masks(model, ids)
    assert all(torch.equal(got[i], expected[i]) if expected[i] is not None else got[i] is None for i in expected)
    assert expected[0] is not None and not torch.equal(expected[0], expected[1]), "the layers' masks differ"
    _, got_grads = gradients(model, [ids], plain=False)
    _, want = gradients(model, [ids], plain=True)
    assert_same_gradients(model, got_grads, want, FP32_RTOL)
    model.eval()
    prompt = batch(size=(1, 5))
    cached = model.generate(prompt, max_new_tokens=7, do_sample=False)
    assert torch.equal(cached, model.generate(prompt, max_new_tokens=7, do_sample=False, use_cache=False))
