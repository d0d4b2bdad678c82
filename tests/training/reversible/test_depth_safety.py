"""Safe by default at depth: a deep GPT-NeoX converted with the defaults trains on plain autograd's gradients.

Reduced width (hidden 64) of issue 15's targets: global gradient relative error <= 1e-2 under bf16
autocast and <= 1e-4 in fp32 against plain autograd on the same converted model, at 24 and 48
blocks, dropout on, embeddings frozen, at random init and after training steps; the stack's
activation memory at 48 blocks at most 3x two fp32 stream pairs; drift measured by default.
"""

from __future__ import annotations

import functools

import pytest
import torch
from training.tiny_text import tiny_text, tiny_tokenizer

from bwsk.training.choices import DEFAULT_DRIFT_TOLERANCE
from bwsk.training.experiments.depth_drift import global_relative_error, stack_activation_bytes, step_gradients, text_batches, train
from bwsk.training.reversible.convert import make_reversible, plain_autograd, reversible_runtime
from bwsk.training.reversible.drift import DriftMonitor, Segment
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.run_folder import read_metrics

TARGETS = {"bf16": 1e-2, "fp32": 1e-4}
PRECISIONS = {"bf16": torch.bfloat16, "fp32": None}
HIDDEN, BATCH, SEQ = 64, 2, 16


def deep_neox(layers: int, *, hidden: int = HIDDEN, dropout: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """A random-init GPT-NeoX (parallel residual) built from its config with default arguments (sdpa, use_cache)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=128,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=4 * hidden,
        max_position_embeddings=64,
        hidden_dropout=dropout,
        attention_dropout=dropout,
    )
    return GPTNeoXForCausalLM(config)


@functools.cache
def converted(layers: int) -> torch.nn.Module:
    """The deep model converted with the defaults, in training mode, its embeddings frozen (built once per depth)."""
    model = make_reversible(deep_neox(layers), measure_gap=False).train()
    model.gpt_neox.embed_in.weight.requires_grad_(False)
    return model


def batch(model: torch.nn.Module) -> torch.Tensor:
    return next(text_batches(BATCH, SEQ, model.config.vocab_size))


def gradient_error(model: torch.nn.Module, precision: str) -> tuple[float, float]:
    """(global relative gradient error against plain autograd, largest rebuild error of any block) of one step."""
    stack = reversible_runtime(model).stack
    ids = batch(model)
    kept, stack.monitor = stack.monitor, DriftMonitor(every=1, blocks="all", rows=None, tolerance=None)
    try:
        got, _ = step_gradients(model, ids, PRECISIONS[precision], seed=3)
        drift = stack.monitor.last.max_error
    finally:
        stack.monitor = kept
    with plain_autograd(model):
        want, _ = step_gradients(model, ids, PRECISIONS[precision], seed=3)
    assert "gpt_neox.embed_in.weight" not in got and "gpt_neox.layers.0.mlp.dense_h_to_4h.weight" in got
    return global_relative_error(got, want), drift


@pytest.mark.sweep
@pytest.mark.parametrize("layers", [24, 48])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_gradients_meet_the_targets_at_random_init(layers, precision):
    error, drift = gradient_error(converted(layers), precision)
    assert error <= TARGETS[precision]
    assert drift == 0.0  # float64 streams rebuild every block's inputs bit for bit


@pytest.mark.sweep
def test_gradients_meet_the_targets_after_training():
    model = make_reversible(deep_neox(24, seed=1), measure_gap=False).train()
    model.gpt_neox.embed_in.weight.requires_grad_(False)
    losses = train(model, 12, batch=BATCH, seq=SEQ, dtype=torch.bfloat16, lr=3e-3)
    assert losses[-1] < losses[0]
    for precision in PRECISIONS:
        error, drift = gradient_error(model, precision)
        assert error <= TARGETS[precision] and drift == 0.0


@pytest.mark.sweep
def test_the_stack_holds_at_most_three_times_two_fp32_pairs_at_48_blocks():
    model = converted(48)
    ids = batch(model)
    two_pairs = 2 * 2 * ids.numel() * HIDDEN * 4
    for precision in PRECISIONS.values():
        held = stack_activation_bytes(model, ids, precision)
        assert 2 * ids.numel() * HIDDEN * 8 <= held <= 3 * two_pairs  # at least the float64 output pair


@pytest.mark.sweep
def test_the_defaults_are_the_safe_ones():
    model = converted(24)
    stack = reversible_runtime(model).stack
    assert stack.streams == torch.float64
    assert stack.monitor.tolerance == DEFAULT_DRIFT_TOLERANCE and stack.monitor.blocks == "sampled" and stack.monitor.every == 100
    assert sorted(stack.calibration) == list(range(24)) and max(stack.calibration.values()) == 0.0  # measured at conversion
    assert stack.segments == [Segment(0, 24)]  # an exact rebuild needs no anchor


@pytest.mark.slow
def test_the_training_log_carries_the_drift_schedule_and_its_cost(tmp_path):
    from bwsk.training.trainer.data import load_text_splits, tokenize_splits
    from bwsk.training.trainer.run import train as run_training

    text = tiny_text(40)
    (tmp_path / "corpus.txt").write_text(text)
    tokenizer = tiny_tokenizer(text)
    splits = tokenize_splits(load_text_splits(tmp_path / "corpus.txt", "80/10/10"), tokenizer)
    config = TrainConfig(mode="reversible", max_steps=3, drift_every=2, precision="fp32", device="cpu", batch_size=2, seq_len=16)
    model = deep_neox(3, hidden=32)
    run_training(model, splits, config, tmp_path / "run", pretrained=False, tokenizer=tokenizer, progress=False)
    measured = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "drift_max_relative_error" in r]
    assert [r["step"] for r in measured] == [1, 3]  # the probes of steps 0 and 2, reported once backward finished
    for record in measured:
        assert record["drift_every"] == 2 and record["drift_streams"] == "float64" and record["drift_max_relative_error"] == 0.0
        assert record["drift_anchors"] == 0 and record["drift_anchor_bytes"] == 0 and record["drift_recomputed_blocks"] == 0
        assert record["drift_blocks"] == [0, 1, 2]
