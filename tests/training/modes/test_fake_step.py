"""A training step under FakeTensorMode counts the bytes a real one does, per category, in every mode; its FLOPs by hand."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from benchmark_script import benchmark
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from training.tiny_models import tiny_model

from bwsk.frontend.zoo import build
from bwsk.training.modes import MODES
from bwsk.training.modes.fake_step import CATEGORIES, WEIGHTLESS_REVERSIBLE, measure_step
from bwsk.training.modes.peak_tracker import PeakTracker
from bwsk.training.reversible.convert import make_reversible, reversible_runtime
from bwsk.training.trainer.optimizer_in_backward import OptimizerInBackward

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out

BATCH, SEQ = 2, 64  # the tiny models' position limit: activations, not the optimizer step, set the peak
CASES = {"neox-parallel": None, "llama": torch.bfloat16}  # parallel residual in fp32; GQA and RMSNorm under bf16 autocast


def config(family: str):
    """A tiny model's config with the KV cache off, as the benchmark builds them (every mode trains without one)."""
    return tiny_model(family, use_cache=False).config


def pairwise() -> list:
    """(family, mode, chunked) covering every pair of values: each mode with both families and both losses, each family
    with both losses, in 8 steps of the 16 triples. A byte the fake step miscounts comes from one of them (the dtype and
    layout of the family, what the mode saves or recomputes, the loss's chunks) or from two together. `make test` runs 4:
    every mode once, every family with both losses; the other 4 are marked `sweep`."""
    cases = []
    for index, mode in enumerate(MODES):
        for family, chunked in zip(CASES, (index % 2 == 0, index % 2 == 1)):
            marks = () if family == list(CASES)[index // 2 % 2] else pytest.mark.sweep
            cases.append(pytest.param(family, mode, chunked, id=f"{family}-{mode}-{'chunked' if chunked else 'full'}", marks=marks))
    return cases


@pytest.mark.parametrize("family,mode,chunked", pairwise())
def test_fake_and_real_steps_count_the_same_bytes(family, mode, chunked):
    fake, real = (
        measure_step(config(family), mode, batch=BATCH, seq=SEQ, dtype=CASES[family], chunked=chunked, fake=f, seed=1)
        for f in (True, False)
    )
    assert fake.peak_by_category == real.peak_by_category
    assert fake.peak_bytes == real.peak_bytes == sum(real.peak_by_category.values())
    assert fake.flops == real.flops > 0
    assert set(real.peak_by_category) == set(CATEGORIES)
    assert real.peak_by_category["Parameter"] == 4 * sum(p.numel() for p in tiny_model(family).parameters())
    assert real.peak_by_category["Activation"] > 0
    assert fake.fake and not real.fake and real.notes == ()  # a fake reversible step says what it did not measure
    assert fake.notes == ((WEIGHTLESS_REVERSIBLE,) if mode == "reversible" else ())


def test_make_reversible_in_a_fake_mode_skips_what_needs_values():
    with FakeTensorMode():
        converted = make_reversible(tiny_model("neox-parallel"), inplace=True)
    runtime = reversible_runtime(converted)
    assert runtime.report.weightless and runtime.report.function_gap is None and runtime.stack.calibration is None
    real = reversible_runtime(make_reversible(tiny_model("neox-parallel"), inplace=True))
    assert not real.report.weightless and real.report.function_gap is not None and real.stack.calibration is not None


def _forward_flops(family: str, linears: str) -> tuple[int, int]:
    """(matrix products, attention) of one forward: 2 x tokens x in x out per linear layer whose name contains
    `linears`; attention's two batched products per layer, 4 x batch x heads x seq^2 x head size (counted without the
    causal half, as torch counts it)."""
    model = tiny_model(family)
    config = model.config
    chosen = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and linears in name]
    matmuls = sum(2 * BATCH * SEQ * m.in_features * m.out_features for m in chosen)
    attention = (
        config.num_hidden_layers * 4 * BATCH * config.num_attention_heads * SEQ**2 * (config.hidden_size // config.num_attention_heads)
    )
    return matmuls, attention


@functools.cache
def fake_neox_step(mode: str, chunked: bool):
    """A fake step of the tiny parallel-residual model (the FLOP tests share the conventional full-loss one)."""
    return measure_step(config("neox-parallel"), mode, batch=BATCH, seq=SEQ, chunked=chunked)


def test_flops_count_forward_backward_and_what_checkpointing_recomputes():
    conventional, checkpoint = fake_neox_step("conventional", False), fake_neox_step("checkpoint", False)
    matmuls, attention = _forward_flops("neox-parallel", "")
    # backward: two products per linear; attention's recomputes its scores (five products, as flash attention does)
    assert conventional.flops == 3 * matmuls + (1 + 5 / 2) * attention
    # the blocks' forward again, but for each block's last product (the MLP's output projection): non-reentrant
    # checkpointing stops recomputing once every tensor backward saved is back, and none comes after it
    blocks, attention = _forward_flops("neox-parallel", "layers.")
    last, _ = _forward_flops("neox-parallel", "dense_4h_to_h")
    assert checkpoint.flops - conventional.flops == blocks - last + attention


def test_chunked_loss_flops_add_one_head_product():
    full, chunked = (fake_neox_step("conventional", c) for c in (False, True))
    head, _ = _forward_flops("neox-parallel", "lm_head")
    assert chunked.flops - full.flops == head  # backward recomputes each chunk's logits


def _benchmark():
    return benchmark("memory")


@pytest.mark.sweep
def test_benchmark_fake_writes_a_record_per_mode_and_variant_and_its_doc_section(tmp_path, capsys):
    out, doc = tmp_path / "fake.json", tmp_path / "memory.md"
    doc.write_text("# Title\n\n## Kept\n\nother text\n")
    argv = ["--fake", "--model", "pythia-70m", "--layers", "1", "--mode", "reversible", "--batch", "1", "--seq", "32"]
    assert _benchmark().main([*argv, "--variants", "full,chunked-oib", "--json", str(out), "--doc", str(doc), "--force"]) == 0
    steps = json.loads(out.read_text())["steps"]
    assert [(r["mode"], r["loss"], r["optimizer"]) for r in steps] == [
        ("conventional", "full", "AdamW"),
        ("conventional", "chunked", "AdamW in backward"),
        ("reversible", "full", "AdamW"),
        ("reversible", "chunked", "AdamW in backward"),
    ]
    parameters = 4 * sum(p.numel() for p in build("pythia-70m", layers=1).parameters())
    for record in steps:
        assert record["fake"] and record["peak_bytes"] == sum(record["peak_by_category"].values())
        assert record["peak_by_category"]["Parameter"] == parameters
    assert "| pythia-70m | 1 x 32 | reversible | chunked + opt. in backward |" in capsys.readouterr().out
    text = doc.read_text()
    assert text.startswith("# Title\n\n## Kept\n\nother text\n") and "## Full size: one training step" in text
    baseline_row = next(line for line in text.splitlines() if "| conventional | full loss |" in line)
    assert baseline_row.split(" | ")[5] == "100%"  # the baseline against itself


def test_benchmark_fake_refuses_several_precisions_in_one_line(capsys):
    assert _benchmark().main(["--fake", "--dtype", "bf16,fp32"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


@pytest.mark.parametrize("mode", ["conventional", "reversible"])
def test_fake_and_real_steps_with_the_optimizer_in_backward_count_the_same_bytes(mode):
    fake, real = (
        measure_step(config("llama"), mode, batch=1, seq=32, fake=f, seed=2, optimizer_in_backward=OptimizerInBackward)
        for f in (True, False)
    )
    assert fake.peak_by_category == real.peak_by_category and fake.peak_bytes == real.peak_bytes
    assert fake.optimizer == real.optimizer == "AdamW in backward"
    assert real.peak_by_category["Gradient"] < real.peak_by_category["Parameter"]  # the gradients never all coexist


def test_the_step_peak_tracker_agrees_with_memtracker():
    model = tiny_model("llama", use_cache=False)
    ids = torch.randint(model.config.vocab_size, (2, 16))
    peaks = []
    for tracker_class in (MemTracker, PeakTracker):
        tracker = tracker_class()
        tracker.track_external(model)
        with tracker:
            model(ids).logits.float().sum().backward()
        model.zero_grad(set_to_none=True)
        peaks.append(tracker.get_tracker_snapshot("peak"))
    assert peaks[0] == peaks[1] and peaks[0]
