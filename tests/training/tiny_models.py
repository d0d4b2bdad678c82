"""Tiny Hugging Face causal LMs (random weights, built from configs) for the reversible-runtime tests."""

from __future__ import annotations

import torch

FAMILIES = ("neox-parallel", "neox-sequential", "gpt2", "llama")


def tiny_model(family: str, *, layers: int = 2, dropout: float = 0.0, hidden: int = 32, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised model of `family` (hidden 32, 4 heads, vocab 128), eager attention."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    LLAMA_VARIANTS = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }

    torch.manual_seed(seed)
    common = dict(vocab_size=128, max_position_embeddings=64, attn_implementation="eager", bos_token_id=0, eos_token_id=0)
    if family.startswith("neox"):
        config = GPTNeoXConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=2 * hidden,
            use_parallel_residual=family == "neox-parallel",
            hidden_dropout=dropout,
            attention_dropout=dropout,
            **common,
        )
        return GPTNeoXForCausalLM(config)
    if family == "gpt2":
        config = GPT2Config(
            n_embd=hidden,
            n_layer=layers,
            n_head=4,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            n_positions=common.pop("max_position_embeddings"),
            **common,
        )
        return GPT2LMHeadModel(config)
    if family in LLAMA_VARIANTS:
        config = LLAMA_VARIANTS[family][0](
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=2 * hidden,
            attention_dropout=dropout,
            **common,
        )
        return LLAMA_VARIANTS[family][1](config)
    raise ValueError(family)
