"""The KV cache in the recomputing modes: off for a forward with gradients, the user's setting without."""

from __future__ import annotations

import pytest
import torch
from training.gradient_check import batch
from training.tiny_models import tiny_model
from transformers import DynamicCache

from bwsk.errors import BwskError
from bwsk.training.kv_cache import cache_off_while_training


def test_a_graph_building_forward_runs_without_a_cache_and_inference_keeps_it():
    model = tiny_model("llama")
    cache_off_while_training(model)
    cache_off_while_training(model)  # idempotent: one hook
    assert len(model._forward_pre_hooks) == 1
    ids = batch()
    assert model(ids).past_key_values is None
    assert model(ids, use_cache=True).past_key_values is None, "a caller's use_cache=True is overridden while gradients are on"
    with torch.no_grad():
        cached = model(ids).past_key_values
    assert cached is not None and cached.get_seq_length() == ids.shape[1]
    assert model.config.use_cache, "the user's setting is left as it was"


def test_an_empty_cache_is_dropped_and_a_filled_one_refused_while_gradients_are_on():
    model = tiny_model("gpt2")
    cache_off_while_training(model)
    ids = batch()
    assert model(ids, past_key_values=DynamicCache(config=model.config)).logits.requires_grad
    with torch.no_grad():
        past = model(ids[:, :4], use_cache=True).past_key_values
    with pytest.raises(BwskError) as refused:
        model(ids[:, 4:], past_key_values=past)
    assert "\n" not in str(refused.value) and "KV cache with past tokens" in str(refused.value)
    with torch.no_grad():
        assert model(ids[:, 4:], past_key_values=past).logits.shape[1] == ids.shape[1] - 4, "inference may continue from it"


def test_a_model_without_use_cache_is_left_alone():
    model = torch.nn.Linear(2, 2)
    cache_off_while_training(model)
    assert not model._forward_pre_hooks
