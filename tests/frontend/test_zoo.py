"""The model zoo: every architecture builds, exports, and its exported program matches eager."""

from __future__ import annotations

import pytest
import torch
from zoo_exports import SEQ, tiny_compiled, zoo_sweep

from bwsk.errors import SourceError
from bwsk.frontend import tensor_outputs, zoo

NAMES = [
    "pythia-70m",
    "pythia-160m",
    "pythia-410m",
    "pythia-1b",
    "gpt2",
    "gpt2-medium",
    "opt-350m",
    "bert-base",
    "vit-base",
    "smollm-135m",
    "resnet18",
]


def test_names_are_the_published_zoo():
    assert zoo.names() == NAMES
    for entry in zoo.ZOO.values():
        assert entry.description and "\n" not in entry.description
        assert entry.source


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo_sweep())
def test_tiny_two_layer_model_exports_and_matches_eager(name):
    source = tiny_compiled(name, device="cpu").source  # the export the lowering and pass tests share
    eager, args = source.module, source.example_inputs
    assert eager is tensor_outputs.traceable(eager) and args[0].shape[0] == 1
    torch.testing.assert_close(source.program.module()(*args), eager(*args))

    dynamic = tensor_outputs.export(eager, args, dynamic_batch=True)
    assert dynamic.example_inputs[0] == args
    model = eager.model if isinstance(eager, tensor_outputs.TensorOutputs) else eager
    bigger = zoo.example_inputs(name, model, batch=3, seq=SEQ, seed=1)
    for inputs in (args, bigger):
        torch.testing.assert_close(dynamic.module()(*inputs), eager(*inputs))


def test_example_inputs_follow_the_model():
    lm = zoo.build("gpt2", tiny=True, layers=1, device="cpu")
    (ids,) = zoo.example_inputs("gpt2", lm, batch=2, seq=8)
    assert ids.dtype == torch.long and ids.shape == (2, 8) and int(ids.max()) < lm.config.vocab_size
    vit = zoo.build("vit-base", tiny=True, layers=1)
    (pixels,) = zoo.example_inputs("vit-base", vit, batch=2)
    assert pixels.dtype == torch.float32 and pixels.shape == (2, 3, 32, 32) and pixels.device.type == "meta"
    with pytest.raises(SourceError, match="1024 positions"):
        zoo.example_inputs("gpt2", lm, seq=2048)


@pytest.mark.slow
def test_tiny_keeps_each_architectures_features():
    pythia = zoo.build("pythia-70m", tiny=True)
    assert pythia.config.use_parallel_residual
    assert pythia.config.rope_parameters["partial_rotary_factor"] == 0.25
    assert pythia.get_output_embeddings().weight is not pythia.get_input_embeddings().weight
    smollm = zoo.build("smollm-135m", tiny=True)
    assert smollm.config.num_key_value_heads < smollm.config.num_attention_heads
    assert smollm.get_output_embeddings().weight is smollm.get_input_embeddings().weight
    opt = zoo.build("opt-350m", tiny=True)
    assert opt.config.word_embed_proj_dim < opt.config.hidden_size and opt.model.decoder.project_in is not None
    assert not opt.config.do_layer_norm_before
    gpt2 = zoo.build("gpt2", tiny=True)
    assert gpt2.get_output_embeddings().weight is gpt2.get_input_embeddings().weight
    for name in NAMES:
        model = zoo.build(name, tiny=True)
        assert not model.training
        if hasattr(model, "config") and hasattr(model.config, "use_cache"):
            assert model.config.use_cache is False and model.config._attn_implementation == "eager"


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("pythia-70m", 70_426_624),  # Biderman et al. 2023, Table 1 (total parameters)
        ("pythia-160m", 162_322_944),
        ("pythia-410m", 405_334_016),
        ("pythia-1b", 1_011_781_632),
        ("gpt2", 124_439_808),
        ("resnet18", 11_689_512),
    ],
)
@pytest.mark.slow
def test_full_size_has_the_published_parameter_count(name, parameters):
    model = zoo.build(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_layers_override_depth():
    assert len(zoo.build("smollm-135m", layers=3).model.layers) == 3
    resnet = zoo.build("resnet18", tiny=True, layers=2)
    assert hasattr(resnet, "layer2") and not hasattr(resnet, "layer3")
    assert resnet.fc.in_features == 16
    with pytest.raises(SourceError, match="1..4"):
        zoo.build("resnet18", layers=5)
    with pytest.raises(SourceError):
        zoo.build("gpt2", layers=0)


def test_cpu_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    first = zoo.build("gpt2", tiny=True, layers=1, device="cpu", seed=3)
    again = zoo.build("gpt2", tiny=True, layers=1, device="cpu", seed=3)
    other = zoo.build("gpt2", tiny=True, layers=1, device="cpu", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    weight = "transformer.h.0.attn.c_attn.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_unknown_name_lists_known_names_closest_first():
    with pytest.raises(SourceError) as caught:
        zoo.build("gtp2")
    message = str(caught.value)
    assert "'gtp2'" in message and "\n" not in message
    assert message.split("known: ")[1].startswith("gpt2")
    assert all(name in message for name in NAMES)


def test_the_zoo_says_which_models_are_causal_language_models_as_transformers_does():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    for name in zoo.names():
        assert zoo.entry(name).causal_lm == (zoo.entry(name).model_class in causal), name
