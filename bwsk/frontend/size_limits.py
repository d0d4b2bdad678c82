"""Refusing absurd sizes before anything is built or allocated, from the numbers of a config alone.

Building costs time per layer even on the meta device (construction and torch.export run every
layer in Python, about a second per full-width layer here) and memory per parameter elsewhere.
A config with 10**9 layers would take years; so a model is refused, with its estimated size, when
it has more than MAX_LAYERS layers, more than MAX_META_PARAMETERS parameters, or, on a real device,
more float32 parameters than the machine has memory. The estimate reads the raw config (a JSON
object or a zoo entry's values), because transformers' own config classes already cost time and
memory per layer (Qwen2Config(num_hidden_layers=10**7) takes about 100 s).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bwsk.errors import SourceError

MAX_LAYERS = 1024  # the deepest published transformer (DeepNet, Wang et al. 2022) has 1,000 layers
MAX_META_PARAMETERS = 2**48  # keeps shape arithmetic (sizes times batch and sequence) far from int64 overflow
FLOAT32_BYTES = 4

# Config fields by meaning, as transformers' config classes spell them. An encoder-decoder counts
# its encoder (the larger of the first group) plus its decoder (the second group).
DEPTH_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers")
DECODER_DEPTH_FIELDS = ("num_decoder_layers", "decoder_layers")
WIDTH_FIELDS = ("hidden_size", "n_embd", "d_model", "dim", "embed_dim")
EMBEDDING_WIDTH_FIELDS = ("word_embed_proj_dim", "embedding_size")  # where embeddings are narrower than the layers
MLP_WIDTH_FIELDS = ("intermediate_size", "ffn_dim", "n_inner", "d_ff", "encoder_ffn_dim", "decoder_ffn_dim")
EXPERT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")


@dataclass(frozen=True)
class SizeEstimate:
    """A lower bound: token embeddings (and an untied head) plus, per layer, attention (4 h**2) and an MLP (2 h f per expert).

    Norms, biases, learned position tables and gates are left out: the zoo's models hold 1.0 to 2.3 times the estimate.
    """

    layers: int
    parameters: int

    def __str__(self) -> str:
        return f"{self.layers:,} layers, about {_about(self.parameters)} parameters ({_about(self.parameters * FLOAT32_BYTES)} bytes at float32)"


def estimate(config: Mapping[str, Any], *, nesting: int = 3) -> SizeEstimate:
    """The size of the model `config` describes, plus its sub-configs (text, vision, ...) up to `nesting` levels down."""
    width = _largest(config, WIDTH_FIELDS)
    mlp = _largest(config, MLP_WIDTH_FIELDS) or 4 * width
    experts = max(_largest(config, EXPERT_FIELDS), 1)
    layers = _largest(config, DEPTH_FIELDS) + _largest(config, DECODER_DEPTH_FIELDS)
    embedding_width = _largest(config, EMBEDDING_WIDTH_FIELDS) or width
    embeddings = _largest(config, ("vocab_size",)) * embedding_width * (2 if config.get("tie_word_embeddings") is False else 1)
    parameters = embeddings + layers * (4 * width * width + 2 * width * mlp * experts)
    for value in config.values() if nesting > 0 else ():
        if isinstance(value, Mapping):
            nested = estimate(value, nesting=nesting - 1)
            layers, parameters = layers + nested.layers, parameters + nested.parameters
    return SizeEstimate(layers, parameters)


def check_model_size(config: Mapping[str, Any], name: str, *, device: str) -> None:
    """Raise SourceError, with the estimated size, when building `config` on `device` would be absurd."""
    size = estimate(config)
    if size.layers > MAX_LAYERS:
        raise SourceError(f"refusing to build {name}: {size}; bwsk lowers at most {MAX_LAYERS:,} layers")
    if size.parameters > MAX_META_PARAMETERS:
        raise SourceError(f"refusing to build {name}: {size}; bwsk builds at most {_about(MAX_META_PARAMETERS)} parameters")
    if device != "meta":
        check_fits_in_memory(size.parameters * FLOAT32_BYTES, f"refusing to build {name} on {device}: {size}")


def check_tensor_size(shape: Sequence[int], item_bytes: int, what: str) -> None:
    """Raise SourceError when a tensor of `shape` would not fit in this machine's memory."""
    elements = 1
    for size in shape:
        elements *= size
    check_fits_in_memory(elements * item_bytes, f"{what} of shape {'x'.join(map(str, shape))}: {_about(elements * item_bytes)} bytes")


def check_fits_in_memory(nbytes: int, context: str) -> None:
    """Raise SourceError(`context`; ...) when `nbytes` exceed this machine's physical memory (unknown memory: no check)."""
    memory = physical_memory()
    if memory is not None and nbytes > memory:
        raise SourceError(f"{context}; more than this machine's {_about(memory)} bytes of memory")


def physical_memory() -> int | None:
    """Bytes of physical memory, where the operating system says (POSIX sysconf)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _largest(config: Mapping[str, Any], fields: Sequence[str]) -> int:
    """The largest non-negative integer among `fields` of `config` (0 when none holds one)."""
    return max((config[f] for f in fields if type(config.get(f)) is int and config[f] > 0), default=0)


def _about(count: int) -> str:
    """Three significant digits in exponent form (exact below 10,000); any size of integer."""
    return f"{count:,}" if count < 10_000 else f"{Decimal(count):.3g}"
