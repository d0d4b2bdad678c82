"""A built-in zoo of model architectures, built from configs with random weights (nothing is downloaded).

Every entry records where its numbers come from. `build` makes a module in eval mode; `tiny=True`
shrinks the width but keeps each architecture's distinguishing features (parallel residual,
partial rotary, grouped-query attention, tied embeddings, embedding projections, ...).
Importing it imports neither torch nor transformers (a command's `--help` lists the zoo at once);
`bwsk.frontend.tensor_outputs.export` turns a built model into a `torch.export.ExportedProgram`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bwsk.errors import SourceError
from bwsk.frontend.size_limits import check_model_size, check_tensor_size

if TYPE_CHECKING:
    import torch
    from torch import nn

TINY_VOCAB = 256
TINY_IMAGE = 32


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: how to configure it at full size and at tiny width.

    `config_class` and `model_class` name classes in `transformers` (looked up lazily so that
    importing this module stays cheap), or are "ResNetConfig" / "ResNet" defined below.
    `tiny` holds the config fields that replace `full` when `tiny=True`; `depth_field` is the config
    field that `build(..., layers=n)` overrides; `max_layers` bounds it where the architecture does.
    """

    description: str
    source: str
    config_class: str
    model_class: str
    full: dict[str, Any]
    tiny: dict[str, Any]
    depth_field: str = "num_hidden_layers"
    max_layers: int | None = None
    causal_lm: bool = True  # a next-token language model (what bwsk-train trains); False for the encoder and image models


def _pythia(hidden: int, layers: int, heads: int, size: str) -> ZooEntry:
    return ZooEntry(
        description=f"EleutherAI Pythia-{size}: GPT-NeoX decoder, parallel residual, rotary on 25% of each head",
        source=f"EleutherAI/pythia-{size} config.json; Biderman et al. 2023, Table 1",
        config_class="GPTNeoXConfig",
        model_class="GPTNeoXForCausalLM",
        full=dict(
            vocab_size=50304,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            hidden_act="gelu",
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
            use_parallel_residual=True,
            attention_bias=True,
            layer_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=0,
        ),
        tiny=dict(vocab_size=TINY_VOCAB, hidden_size=64, num_attention_heads=4, intermediate_size=256),
    )


def _gpt2(hidden: int, layers: int, heads: int, name: str) -> ZooEntry:
    return ZooEntry(
        description=f"OpenAI {name}: pre-LayerNorm decoder, learned positions, Conv1D projections, tied head",
        source=f"openai-community/{name} config.json; Radford et al. 2019, Table 2",
        config_class="GPT2Config",
        model_class="GPT2LMHeadModel",
        full=dict(
            vocab_size=50257,
            n_positions=1024,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            activation_function="gelu_new",
            layer_norm_epsilon=1e-5,
            tie_word_embeddings=True,
            bos_token_id=50256,
            eos_token_id=50256,
        ),
        tiny=dict(vocab_size=TINY_VOCAB, n_embd=64, n_head=4, bos_token_id=TINY_VOCAB - 1, eos_token_id=TINY_VOCAB - 1),
        depth_field="n_layer",
    )


ZOO: dict[str, ZooEntry] = {
    "pythia-70m": _pythia(512, 6, 8, "70m"),
    "pythia-160m": _pythia(768, 12, 12, "160m"),
    "pythia-410m": _pythia(1024, 24, 16, "410m"),
    "pythia-1b": _pythia(2048, 16, 8, "1b"),
    "gpt2": _gpt2(768, 12, 12, "gpt2"),
    "gpt2-medium": _gpt2(1024, 24, 16, "gpt2-medium"),
    "opt-350m": ZooEntry(
        description="Meta OPT-350m: post-LayerNorm decoder, ReLU MLP, 512-wide embeddings projected to 1024",
        source="facebook/opt-350m config.json; Zhang et al. 2022, Table 1",
        config_class="OPTConfig",
        model_class="OPTForCausalLM",
        full=dict(
            vocab_size=50272,
            hidden_size=1024,
            word_embed_proj_dim=512,
            num_hidden_layers=24,
            num_attention_heads=16,
            ffn_dim=4096,
            activation_function="relu",
            max_position_embeddings=2048,
            do_layer_norm_before=False,
            enable_bias=True,
            tie_word_embeddings=True,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
        ),
        tiny=dict(vocab_size=TINY_VOCAB, hidden_size=64, word_embed_proj_dim=32, num_attention_heads=4, ffn_dim=256),
    ),
    "bert-base": ZooEntry(
        description="Google BERT-base (uncased) with its masked-LM head: post-LayerNorm bidirectional encoder",
        source="google-bert/bert-base-uncased config.json; Devlin et al. 2019, Section 3",
        config_class="BertConfig",
        model_class="BertForMaskedLM",
        causal_lm=False,
        full=dict(
            vocab_size=30522,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            hidden_act="gelu",
            max_position_embeddings=512,
            type_vocab_size=2,
            layer_norm_eps=1e-12,
            pad_token_id=0,
            tie_word_embeddings=True,
        ),
        tiny=dict(vocab_size=TINY_VOCAB, hidden_size=64, num_attention_heads=4, intermediate_size=256),
    ),
    "vit-base": ZooEntry(
        description="Google ViT-B/16 at 224x224 with its 1000-class head: pre-LayerNorm encoder over 16x16 patches",
        source="google/vit-base-patch16-224 config.json; Dosovitskiy et al. 2021, Table 1",
        config_class="ViTConfig",
        model_class="ViTForImageClassification",
        causal_lm=False,
        full=dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            hidden_act="gelu",
            image_size=224,
            patch_size=16,
            num_channels=3,
            qkv_bias=True,
            layer_norm_eps=1e-12,
            num_labels=1000,
        ),
        tiny=dict(
            hidden_size=64,
            num_attention_heads=4,
            intermediate_size=256,
            image_size=TINY_IMAGE,
            patch_size=8,
            num_labels=10,
        ),
    ),
    "smollm-135m": ZooEntry(
        description="HuggingFace SmolLM-135M: Llama decoder, RMSNorm, SwiGLU, rotary, 9 query / 3 key-value heads",
        source="HuggingFaceTB/SmolLM-135M config.json",
        config_class="LlamaConfig",
        model_class="LlamaForCausalLM",
        full=dict(
            vocab_size=49152,
            hidden_size=576,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            intermediate_size=1536,
            hidden_act="silu",
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=True,
            bos_token_id=0,
            eos_token_id=0,
        ),
        tiny=dict(vocab_size=TINY_VOCAB, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=256),
    ),
    "resnet18": ZooEntry(
        description="ResNet-18 in plain torch.nn: 4 stages of 2 BasicBlocks, batch norm, 1000-class head",
        source="He et al. 2016, Deep Residual Learning, Table 1 (18-layer column)",
        config_class="ResNetConfig",
        model_class="ResNet",
        causal_lm=False,
        full=dict(widths=(64, 128, 256, 512), num_stages=4, blocks_per_stage=2, stem_width=64, num_classes=1000),
        tiny=dict(widths=(8, 16, 32, 64), stem_width=8, num_classes=10, image_size=TINY_IMAGE),
        depth_field="num_stages",
        max_layers=4,
    ),
}
"""Zoo names to entries. For `resnet18`, `layers` counts residual stages (1-4, each 2 blocks)."""


def names() -> list[str]:
    """The zoo's model names, in the zoo's order."""
    return list(ZOO)


def causal_lm_names() -> list[str]:
    """The zoo's causal language models (what bwsk-train can start from), in the zoo's order."""
    return [name for name, spec in ZOO.items() if spec.causal_lm]


def entry(name: str) -> ZooEntry:
    """The entry for `name`; an unknown name raises SourceError listing the known names, closest first."""
    if name in ZOO:
        return ZOO[name]
    close = difflib.get_close_matches(name, ZOO, n=len(ZOO), cutoff=0.0)
    raise SourceError(f"unknown zoo model {name!r}; known: {', '.join(close)}")


def make_config(name: str, *, tiny: bool = False, layers: int | None = None, device: str = "meta") -> Any:
    """The config object `build` uses: a transformers config or a ResNetConfig; refused when absurd on `device`."""
    spec = entry(name)
    values = {**spec.full, **spec.tiny} if tiny else dict(spec.full)
    if layers is not None:
        if layers < 1 or (spec.max_layers is not None and layers > spec.max_layers):
            limit = f"1..{spec.max_layers}" if spec.max_layers is not None else ">= 1"
            raise SourceError(f"{name} cannot have {layers} layers; expected {limit}")
        values[spec.depth_field] = layers
    check_model_size(values, name, device=device)
    if spec.config_class == "ResNetConfig":
        from bwsk.frontend.resnet import ResNetConfig

        return ResNetConfig(**values)
    import transformers

    return getattr(transformers, spec.config_class)(**values, use_cache=False)


def build(name: str, *, tiny: bool = False, layers: int | None = None, device: str = "meta", seed: int = 0) -> nn.Module:
    """Build zoo model `name` in eval mode.

    `tiny` shrinks width (hidden 64, 4 heads, vocab 256, 32x32 images); `layers` overrides depth
    (transformer blocks; residual stages for resnet18). On "meta" no weight memory is allocated;
    elsewhere weights are random, drawn from `seed` without disturbing the global RNG. Transformers
    models use eager attention and never build a KV cache.
    """
    import torch

    spec = entry(name)
    made = make_config(name, tiny=tiny, layers=layers, device=device)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        if spec.model_class == "ResNet":
            from bwsk.frontend.resnet import ResNet

            model = ResNet(made)
        else:
            import transformers

            model = getattr(transformers, spec.model_class)._from_config(made, attn_implementation="eager")
    return model.eval()


def model_inputs(model: nn.Module, *, batch: int = 1, seq: int = 128, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs for the model's main input, on the model's device (values are drawn on cpu; none on meta).

    Token models (main input `input_ids`) get int64 ids below the config's vocab size, shape
    (batch, seq); image models (`pixel_values`) get float32 of shape (batch, channels, size, size)
    and ignore `seq`. Works for zoo models and for any transformers model with one of those inputs.
    Sizes below 1, or inputs larger than this machine's memory, are refused before allocating.
    """
    import torch

    if batch < 1 or seq < 1:
        raise SourceError(f"batch {batch} and sequence length {seq}: each must be at least 1")
    device = next(model.parameters()).device
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    main_input = getattr(model, "main_input_name", None)
    if main_input == "input_ids":
        limit = max_positions(config)
        if limit is not None and seq > limit:
            raise SourceError(f"sequence length {seq} exceeds the model's {limit} positions")
        return (_random_tensor((batch, seq), torch.long, config.vocab_size, device, generator),)
    if main_input == "pixel_values":
        size = config.image_size
        return (_random_tensor((batch, config.num_channels, size, size), torch.float32, None, device, generator),)
    raise SourceError(
        f"cannot make example inputs for {type(model).__name__} (main input {main_input!r})",
        hint="export it yourself with torch.export.export and pass the saved .pt2",
    )


def example_inputs(name: str, model: nn.Module, *, batch: int = 1, seq: int = 128, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example positional inputs for zoo model `name` built by `build` (see `model_inputs`)."""
    entry(name)
    return model_inputs(model, batch=batch, seq=seq, seed=seed)


def _random_tensor(
    shape: tuple[int, ...], dtype: torch.dtype, below: int | None, device: torch.device, generator: torch.Generator
) -> torch.Tensor:
    """Integers in [0, below) or floats from N(0, 1), drawn on cpu from `generator`; on meta, only the shape."""
    import torch

    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    check_tensor_size(shape, dtype.itemsize, "example input")
    if below is None:
        return torch.randn(shape, generator=generator, dtype=dtype).to(device)
    return torch.randint(0, below, shape, generator=generator, dtype=dtype).to(device)


def max_positions(config: Any) -> int | None:
    """The longest sequence a transformers config allows (None when it sets no limit, or for no config)."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None
