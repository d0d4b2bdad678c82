"""The trainer on a tiny GPT-NeoX and the tests' own text: every mode learns, resume is exact, NaN runs leave nothing."""

from __future__ import annotations

import functools
import json
import signal

import pytest
import torch
from safetensors.torch import load_file
from training.tiny_models import tiny_model
from training.tiny_text import tiny_text, tiny_tokenizer

from bwsk.errors import BwskError
from bwsk.training.modes import MODES
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import load_text_splits, tokenize_splits
from bwsk.training.trainer.evaluation import perplexity
from bwsk.training.trainer.interrupt import TrainingInterrupted
from bwsk.training.trainer.optimizer import TrainingDiverged
from bwsk.training.trainer.run import train
from bwsk.training.trainer.run_folder import RESULTS_FILE, read_metrics, read_result, without_timing

FAST = dict(precision="fp32", device="cpu", batch_size=2, seq_len=32, lr=3e-3, eval_batch_size=16)


@functools.cache
def corpus(tmp_root: str):
    from pathlib import Path

    text = tiny_text(120)
    path = Path(tmp_root) / "corpus.txt"
    path.write_text(text)
    tokenizer = tiny_tokenizer(text)
    return tokenizer, tokenize_splits(load_text_splits(path, "80/10/10"), tokenizer)


@pytest.fixture
def data(tmp_path_factory):
    return corpus(str(tmp_path_factory.getbasetemp()))


def _losses(folder) -> list[float]:
    return [r["loss"] for r in read_metrics(folder / "metrics.jsonl") if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_and_its_loss_falls(mode, data, tmp_path):
    tokenizer, splits = data
    config = TrainConfig(mode=mode, max_steps=16, eval_every=8, **FAST)
    result = train(tiny_model("neox-parallel"), splits, config, tmp_path, pretrained=False, tokenizer=tokenizer, progress=False)
    losses = _losses(tmp_path)
    assert len(losses) == 16 and sum(losses[-3:]) / 3 < losses[0] - 0.5
    assert result.mode == mode and result.steps == 16 and result.stopped == "max steps (16)"
    assert result.peak_memory_bytes > 0 and result.tokens_per_s > 0 and result.test_perplexity < 128
    assert "token-weighted" in result.perplexity_method
    assert (result.drift is not None and result.conversion is not None) == (mode == "reversible")
    assert read_result(tmp_path) == result


def test_saved_folder_loads_with_the_auto_classes_and_reproduces_its_perplexity(data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, splits = data
    config = TrainConfig(max_steps=6, eval_every=3, **FAST)
    result = train(tiny_model("neox-parallel"), splits, config, tmp_path, pretrained=False, tokenizer=tokenizer, progress=False)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    recomputed = perplexity(loaded, splits.test, window=32, stride=16)
    assert recomputed.perplexity == pytest.approx(result.test_perplexity, rel=1e-5)
    assert AutoTokenizer.from_pretrained(tmp_path)("the cat sees").input_ids == tokenizer.encode("the cat sees").ids


class _StopAt:
    """An observer that, at `step`, sends SIGINT (as Ctrl-C would) or SIGTERM (as a scheduler would), or raises (as a crash would)."""

    def __init__(self, step: int, how: str):
        self.step, self.how = step, how

    def __call__(self, record: dict) -> None:
        if record.get("step") == self.step and "loss" in record:
            if self.how in ("sigint", "sigterm"):
                signal.raise_signal(getattr(signal, self.how.upper()))
            else:
                raise RuntimeError("killed")


def _sigint_in_first_evaluation(module, args, output) -> None:
    """A forward hook: Ctrl-C during the first forward in eval mode (the first validation), once."""
    if not module.training and not getattr(module, "interrupted_once", False):
        module.interrupted_once = True
        signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("how,first_step_after", [("sigint", 6), ("sigterm", 6), ("crash", 5), ("sigint-in-validation", 3)])
def test_resume_ends_with_the_weights_and_metrics_of_an_uninterrupted_run(how, first_step_after, data, tmp_path):
    tokenizer, splits = data
    config = TrainConfig(max_steps=8, eval_every=3, checkpoint_every=2, **FAST)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    train(tiny_model("neox-sequential", seed=1), splits, config, straight, pretrained=False, progress=False)
    model = tiny_model("neox-sequential", seed=1)
    if how == "sigint-in-validation":
        model.register_forward_hook(_sigint_in_first_evaluation)
    with pytest.raises(RuntimeError if how == "crash" else TrainingInterrupted) as stopped:
        observer = None if how == "sigint-in-validation" else _StopAt(5, how)
        train(model, splits, config, broken, pretrained=False, progress=False, observer=observer)
    if how == "sigterm":
        assert stopped.value.exit_code == 143 and str(stopped.value).startswith("terminated (SIGTERM) at step 5")
    assert not (broken / RESULTS_FILE).exists()
    resumed_from = []
    result = train(
        tiny_model("neox-sequential", seed=9), splits, config, broken, pretrained=False, progress=False, resume=True,
        observer=lambda record: resumed_from.append(record["step"]),
    )  # fmt: skip
    # SIGINT saved step 5; the crash lost step 5 (last checkpoint: 4); the interrupted validation of step 3 runs first
    assert resumed_from[0] == first_step_after
    expected, got = load_file(straight / "model.safetensors"), load_file(broken / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert [without_timing(r) for r in read_metrics(broken / "metrics.jsonl")] == [
        without_timing(r) for r in read_metrics(straight / "metrics.jsonl")
    ]
    assert result.test == read_result(straight).test


def test_a_nan_loss_stops_the_run_naming_the_step_and_writes_no_results(data, tmp_path):
    tokenizer, splits = data
    config = TrainConfig(max_steps=30, **{**FAST, "lr": 1e6, "grad_clip": 0.0})
    with pytest.raises(TrainingDiverged, match=r"at step \d+") as caught:
        train(tiny_model("neox-parallel"), splits, config, tmp_path, pretrained=False, tokenizer=tokenizer, progress=False)
    assert "no results" in str(caught.value)
    assert not (tmp_path / RESULTS_FILE).exists() and not (tmp_path / "model.safetensors").exists()


@pytest.mark.slow
def test_an_existing_run_is_replaced_only_with_force(data, tmp_path):
    tokenizer, splits = data
    config = TrainConfig(max_steps=2, **FAST)
    (tmp_path / "notes.txt").write_text("mine")
    train(tiny_model("neox-parallel"), splits, config, tmp_path, pretrained=False, progress=False)
    before = (tmp_path / RESULTS_FILE).read_bytes()
    with pytest.raises(BwskError, match="already holds a run"):
        train(tiny_model("neox-parallel"), splits, config, tmp_path, pretrained=False, progress=False)
    assert (tmp_path / RESULTS_FILE).read_bytes() == before
    train(tiny_model("neox-parallel"), splits, TrainConfig(max_steps=3, **FAST), tmp_path, pretrained=False, progress=False, force=True)
    assert read_result(tmp_path).steps == 3 and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_early_stopping_keeps_the_best_validation_weights(data, tmp_path):
    tokenizer, splits = data
    config = TrainConfig(max_steps=40, eval_every=1, patience=2, **{**FAST, "lr": 0.05, "warmup_steps": 0})
    result = train(tiny_model("neox-parallel"), splits, config, tmp_path, pretrained=False, progress=False)
    evaluations = result.evaluations
    best = min(evaluations, key=lambda e: e["nll"])
    assert result.stopped == "early stopping (patience 2)" and result.steps < 40
    assert [e["step"] for e in evaluations][-2:] == [result.steps - 1, result.steps] and best["step"] == result.steps - 2
    assert result.best_valid_step == best["step"] and result.final_valid_loss == best["nll"]


@pytest.mark.slow
def test_a_reversible_run_records_its_seams_and_a_run_saved_before_the_kernels_knob_resumes(data, tmp_path):
    tokenizer, splits = data
    config = TrainConfig(mode="reversible", kernels="torch", max_steps=4, checkpoint_every=2, **FAST)
    with pytest.raises(RuntimeError, match="killed"):
        train(tiny_model("neox-parallel"), splits, config, tmp_path, pretrained=False, progress=False, observer=_StopAt(3, "crash"))
    run_file = tmp_path / "run.json"
    document = json.loads(run_file.read_text())
    for section in ("config", "resolved"):  # as a run.json written before the knob existed
        del document[section]["kernels"]
    run_file.write_text(json.dumps(document))
    saved = TrainConfig.from_json(document["config"])
    assert saved == config  # such a run trained with torch seams, and resumes with them
    result = train(tiny_model("neox-parallel"), splits, saved, tmp_path, pretrained=False, progress=False, resume=True)
    assert result.steps == 4 and result.config["kernels"] == "torch"
    assert {key: result.conversion[key] for key in ("kernels", "fused_norms")} == {"kernels": "torch", "fused_norms": 0}
    assert TrainConfig().kernels == "auto"


@pytest.mark.parametrize("mode,message", [("reversible", "need a CUDA device"), ("conventional", "the conventional mode has none")])
def test_triton_seams_that_cannot_run_are_refused_before_the_folder_is_touched(mode, message, data, tmp_path, monkeypatch):
    _, splits = data
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    config = TrainConfig(mode=mode, kernels="triton", max_steps=1, **FAST)
    with pytest.raises(BwskError, match=message):
        train(tiny_model("neox-parallel"), splits, config, tmp_path / "run", pretrained=False, progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(BwskError, match="unknown kernels 'fast'"):
        TrainConfig(kernels="fast")


@pytest.mark.parametrize("config", [dict(seq_len=65), dict(eval_window=65), dict(eval_stride=32, eval_window=32)])
def test_a_refused_setting_leaves_no_folder(config, data, tmp_path):
    _, splits = data
    with pytest.raises(BwskError, match="exceeds the model's 64 positions|shorter than the evaluation window"):
        train(tiny_model("neox-parallel"), splits, TrainConfig(max_steps=1, **{**FAST, **config}), tmp_path / "run", pretrained=False)
    assert not (tmp_path / "run").exists()
