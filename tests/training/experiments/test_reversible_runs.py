"""A reversible run's folders are the function it trained: its checkpoints load with the Auto classes to the run's
logits, and a finished run starts another reversible run (and is refused, in one line, in every other mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training.tiny_models import tiny_model
from training.tiny_text import write_corpus
from transformers import AutoModelForCausalLM

import bwsk
from bwsk.cli import train as cli
from bwsk.errors import BwskError
from bwsk.training.experiments.grid import run_experiment
from bwsk.training.experiments.runs import RunSpec
from bwsk.training.experiments.start import load_start_model
from bwsk.training.reversible.convert import RUNTIME_ATTRIBUTE, reversible_runtime
from bwsk.training.reversible.huggingface import MODEL_TYPE, BwskReversibleForCausalLM
from bwsk.training.trainer.checkpoint import latest_checkpoint
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import load_text_splits, load_tokenizer, tokenize_splits
from bwsk.training.trainer.run import train
from bwsk.training.trainer.run_folder import read_metrics

bwsk.register()  # the reversible variants' folders load with the Auto classes

SPLIT = "80/10/10"
FAST = dict(precision="fp32", device="cpu", batch_size=2, seq_len=32, lr=3e-3, eval_batch_size=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), lines=120)


@pytest.fixture(scope="module")
def splits(corpus):
    return tokenize_splits(load_text_splits(corpus[0], SPLIT), load_tokenizer(corpus[1]))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus, splits):
    """A reversible run of 4 steps (checkpoints every 2; one validation, at the end: the final weights are the best)."""
    out = tmp_path_factory.mktemp("reversible") / "run"
    config = TrainConfig(mode="reversible", max_steps=4, checkpoint_every=2, **FAST)
    result = train(tiny_model("neox-parallel"), splits, config, out, pretrained=False, tokenizer=load_tokenizer(corpus[1]), progress=False)
    assert result.best_valid_step == result.steps == 4
    return out


def _losses(folder: Path) -> list[float]:
    return [record["loss"] for record in read_metrics(folder / "metrics.jsonl") if "loss" in record]


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.mark.slow
def test_a_checkpoint_folder_loads_as_the_reversible_function_it_holds(finished):
    checkpoint = latest_checkpoint(finished / "checkpoints")
    assert json.loads((checkpoint / "config.json").read_text())["model_type"] == MODEL_TYPE
    loaded = AutoModelForCausalLM.from_pretrained(str(checkpoint), attn_implementation="eager")
    assert isinstance(loaded, BwskReversibleForCausalLM)
    final = AutoModelForCausalLM.from_pretrained(str(finished), attn_implementation="eager")
    ids = torch.randint(0, final.config.text_config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(loaded, ids), _logits(final, ids))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["run", "checkpoints"])
def test_a_finished_reversible_run_is_a_start_in_its_own_layout(finished, where):
    start = load_start_model(str(finished if where == "run" else finished / "checkpoints"))
    assert start.pretrained and hasattr(start.model, RUNTIME_ATTRIBUTE) and start.model.training
    final = AutoModelForCausalLM.from_pretrained(str(finished), attn_implementation="eager")
    assert reversible_runtime(start.model).report.layers == reversible_runtime(final.model).report.layers
    ids = torch.randint(0, final.config.text_config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    assert torch.equal(_logits(start.model, ids), _logits(final, ids))


@pytest.mark.slow
def test_it_trains_further_in_the_reversible_mode(finished, splits, tmp_path):
    start = load_start_model(str(finished))
    config = TrainConfig(mode="reversible", max_steps=2, **FAST)
    result = train(start.model, splits, config, tmp_path, pretrained=start.pretrained, progress=False)
    assert result.start == "fine-tune" and result.steps == 2 and result.conversion["function_gap"] is None
    saved, first = (json.loads((folder / "config.json").read_text()) for folder in (tmp_path, finished))
    assert saved["model_type"] == MODEL_TYPE and saved["coupling"] == first["coupling"]
    before, after = _losses(finished), _losses(tmp_path)
    assert after[0] < before[0] - 0.5  # it starts from the trained weights, not from a fresh init


@pytest.mark.slow
def test_other_modes_are_refused_in_one_line_before_the_output_is_touched(finished, corpus, tmp_path, capsys):
    out = tmp_path / "plain"
    argv = [finished, "--mode", "conventional", "--data", corpus[0], "--split", SPLIT, "--out", out, "--device", "cpu"]
    code = cli.main([str(a) for a in [*argv, "--max-steps", "1", "--seq-len", "16"]])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "reversible" in err and "--mode reversible" in err and "'conventional'" in err
    assert not out.exists()


@pytest.mark.slow
def test_the_finetune_experiment_from_a_reversible_run_needs_the_reversible_mode(finished, corpus, tmp_path):
    spec = RunSpec(str(finished), str(corpus[0]), split=SPLIT, tokenizer=str(corpus[1]))
    with pytest.raises(BwskError, match=r"reversible run .*not conventional, analyzed.*--modes reversible"):
        run_experiment(spec, TrainConfig(max_steps=1, seq_len=16, precision="fp32", device="cpu"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before OUT is made
