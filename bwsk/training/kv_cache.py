"""The KV cache in the recomputing training modes: off for a forward that builds a graph, the user's setting otherwise.

Checkpoint, analyzed and reversible run (part of) the forward a second time in
backward; a KV cache would be appended to twice (and its tensors kept alive for
nothing). `cache_off_while_training(model)` hooks the model's forward: a call
with gradients enabled runs with `use_cache=False` (a KV cache passed in is
dropped when it is empty, refused in one line when it holds past tokens: the
recompute could not see them as the forward did). A call without gradients
(inference, `generate`) is left alone: `config.use_cache` and the caller's
arguments apply as the user set them.

`cache_on_for_saving(model)`: a saved folder is for inference, so its config and generation config say
`use_cache` as the config class's default (True for the causal LMs), whatever training set.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from bwsk.errors import BwskError


def cache_off_while_training(model: nn.Module) -> None:
    """Hook `model` (once) so that its graph-building calls run without a KV cache; a model whose forward takes no
    `use_cache` is left as it is."""
    if "use_cache" not in inspect.signature(model.forward).parameters:
        return
    if _without_cache not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_without_cache, with_kwargs=True)


def _without_cache(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
    if not torch.is_grad_enabled():
        return None
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    past = bound.arguments.get("past_key_values")
    if past is not None:
        if _past_length(past):
            raise BwskError(
                f"{type(module).__name__}: a KV cache with past tokens was passed to a forward with gradients on; the training "
                "modes recompute the forward in backward without it (call under torch.no_grad, or pass no past_key_values)"
            )
        bound.arguments["past_key_values"] = None
    bound.arguments["use_cache"] = False
    return bound.args, bound.kwargs


def _past_length(past: Any) -> int:
    """Tokens a KV cache (a transformers Cache, or legacy per-layer (key, value) tuples) already holds."""
    if hasattr(past, "get_seq_length"):
        return int(past.get_seq_length())
    return int(past[0][0].shape[-2]) if len(past) and len(past[0]) else 0


def inference_use_cache(config: Any) -> bool:
    """`use_cache` as a config saved for inference says it: its class's default (True for the causal LMs; True for a
    class without one), not the False that training or a config built for training set."""
    default = getattr(type(config), "use_cache", True)
    return default if isinstance(default, bool) else True


@contextmanager
def cache_on_for_saving(model: nn.Module) -> Iterator[None]:
    """Within the block, `model`'s config, its text config and its generation config say `use_cache` as
    `inference_use_cache`; each says what it said before after the block (the live model trains on as it did)."""
    config = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else None
    found = (config, text, getattr(model, "generation_config", None))
    configs = list({id(c): c for c in found if c is not None and hasattr(c, "use_cache")}.values())
    before = [c.use_cache for c in configs]
    try:
        for c in configs:
            c.use_cache = inference_use_cache(c)
        yield
    finally:
        for c, value in zip(configs, before):
            c.use_cache = value
