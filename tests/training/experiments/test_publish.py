"""What makes an experiment publishable and its working data one layout: the tokenizer's eos/bos/pad rule (and the
refusal without an end-of-text token), the seed folders shared with `run_seeds`, and what --force removes (only
the names bwsk owns) and how an interrupted experiment continues (again, with --force)."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from training.tiny_text import tiny_text, tiny_tokenizer, write_corpus

from bwsk.errors import BwskError, SourceError
from bwsk.training.experiments import grid
from bwsk.training.experiments.grid import run_experiment
from bwsk.training.experiments.runs import RunSpec, resume_training, run_seeds
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import require_special_tokens, special_tokens
from bwsk.training.trainer.interrupt import TrainingInterrupted

CONFIG = TrainConfig(max_steps=2, seq_len=16, batch_size=2, eval_window=16, eval_batch_size=16, precision="fp32", device="cpu")
SPLIT = "80/10/10"
SCRATCH = dict(experiments=("scratch",), modes=("conventional",), progress=False)
PUBLISHED = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_results.json",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), lines=120)


def zoo(corpus: tuple[Path, Path], tokenizer: Path | None = None) -> RunSpec:
    return RunSpec("pythia-70m", str(corpus[0]), split=SPLIT, tokenizer=str(tokenizer or corpus[1]), tiny=True, layers=1)


def _names(folder: Path) -> set[str]:
    return {item.name for item in folder.iterdir()}


def _words(*special: str, normal: tuple[str, ...] = ()) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(list(special))
    tokenizer.add_tokens(list(normal))
    return tokenizer


@pytest.mark.parametrize(
    "special,normal,expected",
    [
        (("<|endoftext|>", "<|padding|>"), (), ("<|endoftext|>", "<|endoftext|>", "<|padding|>")),  # GPT-NeoX
        (("<s>", "</s>", "<pad>"), (), ("</s>", "<s>", "<pad>")),  # Llama 2 / OPT style
        (("<|begin_of_text|>", "<|end_of_text|>"), (), ("<|end_of_text|>", "<|begin_of_text|>", "<|end_of_text|>")),  # Llama 3
        (("<pad>",), ("</s>",), None),  # "</s>" as an ordinary token is no end-of-text token
    ],
)
def test_the_special_token_rule(special, normal, expected):
    found = special_tokens(_words(*special, normal=normal))
    assert found == ({} if expected is None else dict(zip(("eos_token", "bos_token", "pad_token"), expected)))


def test_an_experiment_needs_an_end_of_text_token_and_says_so_before_any_run(corpus, tmp_path):
    bare = tmp_path / "bare.json"
    tokenizer = tiny_tokenizer(tiny_text(20))
    without = Tokenizer(models.WordLevel(tokenizer.get_vocab(), unk_token="[UNK]"))  # the same words, no special token
    without.pre_tokenizer = pre_tokenizers.Whitespace()
    without.save(str(bare))
    with pytest.raises(SourceError, match=r"bare.json: none of <\|endoftext\|>, .* is a special token .*add_special_tokens") as refused:
        run_experiment(zoo(corpus, bare), CONFIG, tmp_path / "out", **SCRATCH)
    assert "\n" not in str(refused.value) and not (tmp_path / "out").exists()
    assert require_special_tokens(tokenizer, "tiny")["eos_token"] == "<|endoftext|>"


@pytest.mark.slow
def test_the_experiment_keeps_its_seeds_in_the_layout_of_run_seeds(corpus, tmp_path):
    seeded, _ = run_seeds(zoo(corpus), dataclasses.replace(CONFIG, mode="conventional"), tmp_path / "seeds", seeds=2, progress=False)
    run_experiment(zoo(corpus), CONFIG, tmp_path / "grid", seeds=2, **SCRATCH)
    alone, in_grid = tmp_path / "seeds", tmp_path / "grid" / "runs" / "scratch-conventional"
    assert _names(alone) == _names(in_grid) == {"seed-0", "seed-1", "seeds.json"}
    for seed in ("seed-0", "seed-1"):
        assert _names(alone / seed) == _names(in_grid / seed)
    assert json.loads((alone / "seeds.json").read_text()).keys() == json.loads((in_grid / "seeds.json").read_text()).keys()
    assert [r.seed for r in seeded] == [0, 1]


@pytest.mark.slow
def test_force_replaces_the_experiment_and_removes_only_what_bwsk_owns(corpus, tmp_path):
    out = tmp_path / "out"
    run_experiment(zoo(corpus), CONFIG, out, seeds=2, **SCRATCH)
    mine = [out / "notes.txt", out / "scratch-conventional" / "notes.txt", out / "runs" / "scratch-conventional" / "seed-1" / "notes.txt"]
    for path in mine:
        path.write_text("mine")
    earlier = out / "scratch-bwsk-reversible"  # the earlier layout: a variant folder that was a run folder, other seeds inside
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "run.json").write_text("{}")
    (out / "scratch-conventional" / "seed-7").mkdir()
    (out / "scratch-conventional" / "seed-7" / "run.json").write_text("{}")
    before = (out / "results.json").read_bytes()
    with pytest.raises(BwskError, match=r"already holds an experiment \(README.md\); pass --force"):
        run_experiment(zoo(corpus), CONFIG, out, **SCRATCH)
    assert (out / "results.json").read_bytes() == before
    summary = run_experiment(zoo(corpus), CONFIG, out, seeds=1, force=True, **SCRATCH)
    assert summary["seeds"] == [0] and all(path.read_text() == "mine" for path in mine)
    assert _names(out) == {"README.md", "results.json", "loss_curves.png", "peak_memory.png", "runs", "scratch-conventional", "notes.txt"}
    assert _names(out / "scratch-conventional") == PUBLISHED | {"notes.txt"}
    assert _names(out / "runs" / "scratch-conventional") == {"seed-0", "seed-1", "seeds.json"}
    assert _names(out / "runs" / "scratch-conventional" / "seed-1") == {"notes.txt"}  # the run's own files are gone
    assert json.loads((out / "runs" / "scratch-conventional" / "seeds.json").read_text())["seeds"] == [0]


@pytest.mark.slow
def test_an_interrupted_experiment_writes_nothing_to_publish_and_continues_with_force(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def interrupted_at_step_1(*args, **kwargs):
        def observer(record: dict) -> None:
            if record.get("step") == 1 and "loss" in record:
                signal.raise_signal(signal.SIGINT)

        return train(*args, **{**kwargs, "observer": observer})

    train = grid.train
    monkeypatch.setattr(grid, "train", interrupted_at_step_1)
    with pytest.raises(TrainingInterrupted, match=r"interrupted in scratch-conventional seed 0 at step 1; .*--force"):
        run_experiment(zoo(corpus), CONFIG, out, **SCRATCH)
    assert _names(out) == {"runs"}
    run = out / "runs" / "scratch-conventional" / "seed-0"
    with pytest.raises(BwskError, match=r"a run of `bwsk-train experiment` \(scratch-conventional\).*again with --force"):
        resume_training(run)
    monkeypatch.undo()
    summary = run_experiment(zoo(corpus), CONFIG, out, force=True, **SCRATCH)
    assert summary["variants"][0]["runs"][0]["steps"] == 2 and _names(out / "scratch-conventional") == PUBLISHED
