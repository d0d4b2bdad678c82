"""Text splits from folders, files and split rules; tokenization; the deterministic, rank-disjoint block sampler."""

from __future__ import annotations

import sys

import pytest
import torch
from training.tiny_text import tiny_text, tiny_tokenizer

from bwsk.errors import SourceError
from bwsk.training.trainer import data
from bwsk.training.trainer.data import BlockSampler, load_text_splits, split_fractions, tokenize_splits


def _lines(prefix: str, count: int) -> str:
    return "".join(f"{prefix} line {i}\n" for i in range(count))


def test_wikitext_folder_takes_one_flavour_for_all_splits(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text(_lines(f"tok-{split}", 3))
    (tmp_path / "wiki.train.raw").write_text("raw train\n")  # raw flavour incomplete: not mixed in
    splits = load_text_splits(tmp_path)
    assert (splits.train, splits.test) == (_lines("tok-train", 3), _lines("tok-test", 3))
    assert "train=wiki.train.tokens" in splits.description


def test_raw_flavour_and_the_validation_alias(tmp_path):
    (tmp_path / "train.raw").write_text("a\n")
    (tmp_path / "validation.raw").write_text("b\n")
    (tmp_path / "test.raw").write_text("c\n")
    assert [load_text_splits(tmp_path).__dict__[s] for s in ("train", "valid", "test")] == ["a\n", "b\n", "c\n"]


def test_folder_without_train_points_to_the_proxy_rule(tmp_path):
    (tmp_path / "valid.tokens.txt").write_text("v\n")
    (tmp_path / "test.tokens.txt").write_text("t\n")
    with pytest.raises(SourceError, match="--split proxy"):
        load_text_splits(tmp_path)


def test_proxy_trains_on_valid_and_halves_test_by_lines(tmp_path):
    (tmp_path / "valid.tokens.txt").write_text(_lines("valid", 4))
    (tmp_path / "test.tokens.txt").write_text(_lines("test", 7))
    (tmp_path / "test.raw.txt").write_text("raw flavour lacks a valid file, so it is not used\n")
    splits = load_text_splits(tmp_path, "proxy")
    assert splits.train == _lines("valid", 4)
    assert splits.valid == "".join(f"test line {i}\n" for i in range(3))
    assert splits.test == "".join(f"test line {i}\n" for i in range(3, 7))
    assert "proxy" in splits.description and "lines 1-3" in splits.description and "lines 4-7" in splits.description


def test_text_file_split_rule_is_contiguous_by_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(_lines("x", 20))
    splits = load_text_splits(path, "80/10/10")
    assert splits.train.count("\n") == 16 and splits.valid.count("\n") == 2 and splits.test.count("\n") == 2
    assert splits.train + splits.valid + splits.test == path.read_text()


@pytest.mark.parametrize("rule", ["90/5", "90/10/10", "100/0/0", "a/b/c", "-5/55/50"])
def test_bad_split_rules_are_refused(rule):
    with pytest.raises(SourceError, match="split rule"):
        split_fractions(rule)


def test_file_too_short_to_split_and_misapplied_rules(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("one\ntwo\n")
    with pytest.raises(SourceError, match="too few"):
        load_text_splits(path, "90/5/5")
    with pytest.raises(SourceError, match="proxy needs a WikiText folder"):
        load_text_splits(path, "proxy")
    with pytest.raises(SourceError, match="applies to a single text file"):
        load_text_splits(tmp_path, "90/5/5")


def test_dataset_name_without_the_datasets_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as where the optional package is not installed
    with pytest.raises(SourceError, match="needs the `datasets` package"):
        load_text_splits("wikitext:wikitext-2-raw-v1")


@pytest.mark.parametrize("name", ["missing-corpus.txt", "./wiki", "/data/wiki", "notes.jsonl"])
def test_a_missing_path_is_never_taken_for_a_dataset_name(name, monkeypatch):
    monkeypatch.setattr(data, "_hf_dataset_splits", lambda *args: pytest.fail("would try to download"))
    with pytest.raises(SourceError, match="no such file or folder$"):
        load_text_splits(name)


def test_tokenized_splits_are_int64_streams(tmp_path):
    text = tiny_text(40)
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    tokenizer = tiny_tokenizer(text)
    splits = tokenize_splits(load_text_splits(path, "50/25/25"), tokenizer)
    assert splits.train.dtype == torch.long and splits.train.ndim == 1
    assert splits.vocab_size == tokenizer.get_vocab_size()
    assert splits.train[:4].tolist() == tokenizer.encode(text[: text.index(".")]).ids[:4]


def test_sampler_order_depends_on_seed_and_epoch_only_and_resumes_mid_epoch():
    tokens = torch.arange(1000)
    sampler = BlockSampler(tokens, seq_len=10, batch_size=4, seed=3)
    assert sampler.batches_per_epoch == 25
    first = list(sampler.batches(0))
    assert all(b.shape == (4, 10) for b in first)
    assert torch.equal(torch.cat(first).flatten().sort().values, tokens)  # every block exactly once
    assert all(torch.equal(a, b) for a, b in zip(first, BlockSampler(tokens, 10, 4, seed=3).batches(0)))
    assert not torch.equal(first[0], next(sampler.batches(1)))
    assert not torch.equal(first[0], next(BlockSampler(tokens, 10, 4, seed=4).batches(0)))
    assert all(torch.equal(a, b) for a, b in zip(first[7:], sampler.batches(0, start=7)))


def test_sampler_ranks_are_disjoint_and_equal_length():
    tokens = torch.arange(1030)  # 103 blocks: the tail and the blocks short of a full batch on each rank are dropped
    ranks = [BlockSampler(tokens, 10, 4, seed=0, rank=r, world_size=3) for r in range(3)]
    seen = [torch.cat(list(s.batches(2))).flatten() for s in ranks]
    assert len({s.numel() for s in seen}) == 1 and seen[0].numel() == 8 * 4 * 10
    assert len(set(torch.cat(seen).tolist())) == 3 * seen[0].numel()


def test_sampler_refuses_a_split_shorter_than_a_batch():
    with pytest.raises(SourceError, match="fewer than one batch"):
        BlockSampler(torch.arange(50), seq_len=10, batch_size=8, seed=0)
