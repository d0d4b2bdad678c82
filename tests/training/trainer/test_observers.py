"""Observers of a run's metrics records: JSON lines spaced in time, TensorBoard scalars, and the CLI flags that choose them."""

from __future__ import annotations

import io
import json
import sys

import pytest
from cli.train_runs import run
from training.tiny_text import write_corpus

from bwsk.errors import BwskError
from bwsk.training.trainer.observers import JsonLinesLog, TensorBoardLog, observing


def test_json_lines_keep_every_evaluation_and_space_the_steps():
    stream, clock = io.StringIO(), iter([0.0, 4.0, 11.0, 12.0, 13.0])
    log = JsonLinesLog(stream, every=10.0, clock=lambda: next(clock))
    for record in ({"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.0}, {"step": 3, "split": "valid", "nll": 1.0}):
        log(record)
    log({"step": 4, "loss": 0.5})
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == [
        {"step": 1, "loss": 2.0},
        {"step": 3, "loss": 1.0},
        {"step": 3, "split": "valid", "nll": 1.0},
    ]


def test_observing_calls_each_in_order_and_none_for_none():
    seen: list[tuple[str, int]] = []
    both = observing([lambda r: seen.append(("a", r["step"])), None, lambda r: seen.append(("b", r["step"]))])
    both({"step": 7})
    assert seen == [("a", 7), ("b", 7)] and observing([None, None]) is None


def test_tensorboard_without_its_package_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(BwskError, match=r"pip install 'bwsk\[tensorboard\]'"):
        TensorBoardLog(tmp_path)


def test_tensorboard_writes_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TensorBoardLog(tmp_path)
    log({"step": 1, "loss": 2.0, "lr": 0.1, "grad_norm": None})
    log({"step": 1, "split": "valid", "nll": 1.5, "perplexity": 4.48})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"train/loss", "train/lr", "valid/nll", "valid/perplexity"} == set(events.Tags()["scalars"])


def test_log_format_jsonl_prints_the_records_and_no_text_progress(tmp_path, capsys):
    text, tokenizer = write_corpus(tmp_path)
    argv = ["pythia-70m", "--tiny", "--layers", "1", "--data", text, "--tokenizer", tokenizer, "--out", tmp_path / "run"]
    code, _, err = run(
        [*argv, "--seq-len", "16", "--max-steps", "2", "--device", "cpu", "--precision", "fp32", "--log-format", "jsonl"], capsys
    )
    assert code == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    assert records[0]["step"] == 1 and "loss" in records[0] and any(r.get("split") == "test" for r in records)
