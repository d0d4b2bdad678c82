"""Tiny Hugging Face causal LMs (random weights) built from their configs with the configs' default arguments.

Defaults stay the library's: sdpa attention, `use_cache` as the config says, the config's dropout. Only the width,
depth, vocabulary and token ids are set; `dropout` and `overrides` (any config argument, e.g. `attn_implementation`
for a test about eager attention, or `layer_types`) change more when a test is about them.
"""

from __future__ import annotations

import torch

FAMILIES = ("neox-parallel", "neox-sequential", "gpt2", "llama", "mistral", "qwen2", "opt")
VOCAB = 128


def tiny_model(
    family: str, *, layers: int = 2, dropout: float | None = None, hidden: int = 32, seed: int = 0, **overrides
) -> torch.nn.Module:
    """A randomly initialised model of `family` (hidden 32, 4 heads, vocab 128), in training mode as a config builds it."""
    import transformers

    torch.manual_seed(seed)
    config_class, model_class, values, dropouts = _family(family, layers, hidden)
    if dropout is not None:
        values.update(dict.fromkeys(dropouts, dropout))
    config = getattr(transformers, config_class)(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, **{**values, **overrides})
    return getattr(transformers, model_class)(config)


def _family(family: str, layers: int, hidden: int) -> tuple[str, str, dict, tuple[str, ...]]:
    """(config class, model class, size arguments, names of the dropout arguments) of `family`."""
    llama_like = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    families = {
        "neox-parallel": (
            "GPTNeoXConfig",
            "GPTNeoXForCausalLM",
            dict(
                hidden_size=hidden,
                num_hidden_layers=layers,
                num_attention_heads=4,
                intermediate_size=2 * hidden,
                max_position_embeddings=64,
            ),
            ("hidden_dropout", "attention_dropout"),
        ),
        "gpt2": (
            "GPT2Config",
            "GPT2LMHeadModel",
            dict(n_embd=hidden, n_layer=layers, n_head=4, n_positions=64),
            ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
        ),
        "llama": ("LlamaConfig", "LlamaForCausalLM", llama_like, ("attention_dropout",)),
        "mistral": ("MistralConfig", "MistralForCausalLM", llama_like, ("attention_dropout",)),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", llama_like, ("attention_dropout",)),
        "opt": (
            "OPTConfig",
            "OPTForCausalLM",
            dict(
                hidden_size=hidden,
                num_hidden_layers=layers,
                num_attention_heads=4,
                ffn_dim=2 * hidden,
                word_embed_proj_dim=hidden,
                max_position_embeddings=64,
            ),
            ("dropout", "attention_dropout"),
        ),
    }
    if family == "neox-sequential":
        config_class, model_class, values, dropouts = families["neox-parallel"]
        return config_class, model_class, {**values, "use_parallel_residual": False}, dropouts
    if family not in families:
        raise ValueError(family)
    config_class, model_class, values, dropouts = families[family]
    return config_class, model_class, dict(values), dropouts
