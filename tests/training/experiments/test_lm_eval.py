"""Stock evaluation: lm-eval's `HFLM` on a plain and a reversible variant folder, with bwsk's local task, reports the
token perplexity bwsk's scorer predicts for lm-eval's windows (1e-3 relative), on the trainer's own test tokens; the
check tells windowings apart; `--eval lm-eval` is refused in one line without lm-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training.tiny_models import tiny_model
from training.tiny_text import write_corpus
from transformers import AutoTokenizer

from bwsk.cli.train import main
from bwsk.errors import BwskError
from bwsk.training.experiments import lm_eval_task
from bwsk.training.experiments.lm_eval_task import (
    evaluate_variant,
    lm_eval_tokens,
    predict_lm_eval_perplexity,
    read_documents,
    require_lm_eval,
    write_task,
)
from bwsk.training.reversible.convert import make_reversible
from bwsk.training.trainer.data import BlockSampler, load_text_splits, load_tokenizer, tokenize_splits
from bwsk.training.trainer.run_folder import save_model

TOLERANCE = 1e-3  # relative: what issue 20 asks of lm-eval's number against bwsk's


def _trained(model: torch.nn.Module, tokens: torch.Tensor, steps: int = 40) -> torch.nn.Module:
    """`model` after a few AdamW steps on `tokens`, so that its predictions depend on the context (windows matter)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batches = BlockSampler(tokens, seq_len=32, batch_size=8, seed=0)
    model.train()
    for step in range(steps):
        batch = next(batches.batches(step // batches.batches_per_epoch, step % batches.batches_per_epoch))
        loss = model(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict:
    """A plain and a reversible variant folder (saved as the trainer saves), the task of their test split, the tokens."""
    pytest.importorskip("lm_eval")
    root = tmp_path_factory.mktemp("lm_eval")
    text_file, tokenizer_file = write_corpus(root)
    tokenizer = load_tokenizer(tokenizer_file)
    texts = load_text_splits(text_file, "90/5/5")
    splits = tokenize_splits(texts, tokenizer)
    plain = _trained(tiny_model("neox-parallel", dropout=0.0), splits.train)
    models = {"plain": plain, "reversible": make_reversible(plain, measure_gap=False)}
    for name, model in models.items():
        (root / name).mkdir()
        save_model(model, root / name, tokenizer=tokenizer)
    write_task(root / "task", texts.test, AutoTokenizer.from_pretrained(str(root / "plain")))
    return {"root": root, "test": splits.test}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "reversible"])
def test_lm_evals_token_perplexity_is_bwsks_prediction(variants, name):
    found = evaluate_variant(variants["root"] / name, variants["root"] / "task")
    assert found["tokens"] == variants["test"].numel() > 2 * found["max_length"]  # every test token, several windows
    assert found["relative_difference"] < TOLERANCE
    assert found["token_perplexity"] == pytest.approx(found["bwsk_prediction"], rel=TOLERANCE)


@pytest.mark.slow
def test_the_check_tells_windowings_apart(variants):
    """Shorter windows (less context) change lm-eval's number by more than the tolerance, and bwsk predicts it."""
    folder, task = variants["root"] / "plain", variants["root"] / "task"
    full, short = evaluate_variant(folder, task), evaluate_variant(folder, task, max_length=8)
    assert short["max_length"] == 8 and short["relative_difference"] < TOLERANCE
    assert abs(short["token_perplexity"] / full["token_perplexity"] - 1) > 3 * TOLERANCE


@pytest.mark.slow
def test_the_task_scores_the_trainers_test_tokens(variants):
    tokenizer = AutoTokenizer.from_pretrained(str(variants["root"] / "plain"))
    (document,) = read_documents(variants["root"] / "task")
    assert lm_eval_tokens(tokenizer, document) == variants["test"].tolist()


@pytest.mark.slow
def test_the_prediction_refuses_documents_without_tokens(variants):
    tokenizer = AutoTokenizer.from_pretrained(str(variants["root"] / "plain"))
    with pytest.raises(BwskError, match="no tokens"):
        predict_lm_eval_perplexity(tiny_model("neox-parallel"), tokenizer, [""], max_length=8)


def test_eval_lm_eval_without_lm_eval_is_refused_in_one_line(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setattr(lm_eval_task, "find_spec", lambda name: None)
    with pytest.raises(BwskError, match=r"pip install 'bwsk\[eval\]'"):
        require_lm_eval()
    text_file, tokenizer_file = write_corpus(tmp_path)
    argv = ["experiment", "--model", "pythia-70m", "--tiny", "--experiments", "scratch", "--data", str(text_file)]
    assert main([*argv, "--tokenizer", str(tokenizer_file), "--out", str(tmp_path / "out"), "--eval", "lm-eval"]) != 0
    error = capsys.readouterr().err.strip()
    assert "bwsk[eval]" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any run


@pytest.mark.sweep  # a two-run experiment, then lm-eval on both variants (~25 s on a loaded 2-core CPU)
def test_experiment_eval_lm_eval_records_the_numbers_in_results_and_card(tmp_path: Path):
    pytest.importorskip("lm_eval")
    text_file, tokenizer_file = write_corpus(tmp_path)
    out = tmp_path / "out"
    argv = ["experiment", "--model", "pythia-70m", "--tiny", "--experiments", "scratch", "--modes", "conventional,reversible"]
    argv += ["--data", str(text_file), "--split", "90/5/5", "--tokenizer", str(tokenizer_file), "--max-steps", "2"]
    argv += ["--seq-len", "32", "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--out", str(out), "--eval", "lm-eval"]
    assert main(argv) == 0
    found = json.loads((out / "results.json").read_text())["lm_eval"]
    assert set(found["variants"]) == {"scratch-conventional", "scratch-bwsk-reversible"}
    for row in found["variants"].values():
        assert row["relative_difference"] < TOLERANCE and row["tokens"] > 0
    assert {item.name for item in (out / "lm_eval").iterdir()} == {
        "bwsk_test_perplexity.yaml",
        "bwsk_lm_eval_task.py",
        "bwsk_test_split.jsonl",
    }
    card = (out / "README.md").read_text()
    line = next(line for line in card.splitlines() if line.startswith("- **lm-eval**"))
    assert all(f"`{name}` {row['token_perplexity']:.3f}" in line for name, row in found["variants"].items())
