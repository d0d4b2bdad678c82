"""The experiment grid: its layout, Auto-loadable variant folders whose perplexity recomputes to the recorded one,
the noise floor beside every difference, and refusals (no pretrained start, a NaN run, an existing output)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from training.tiny_models import tiny_model
from training.tiny_text import write_corpus
from transformers import AutoModelForCausalLM

import bwsk
from bwsk.errors import BwskError
from bwsk.training.experiments.grid import ExperimentFailed, run_experiment
from bwsk.training.experiments.runs import RunSpec
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import load_text_splits, load_tokenizer, tokenize_splits
from bwsk.training.trainer.evaluation import perplexity
from bwsk.training.trainer.run_folder import read_result

bwsk.register()  # the reversible variants' folders load with the Auto classes

CONFIG = TrainConfig(max_steps=2, seq_len=16, batch_size=2, eval_window=16, eval_batch_size=16, precision="fp32", device="cpu")
SPLIT = "80/10/10"


def spec(model: str, corpus: tuple[Path, Path], **options) -> RunSpec:
    return RunSpec(model, str(corpus[0]), split=SPLIT, tokenizer=str(corpus[1]), **options)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), lines=120)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny GPT-NeoX with weights in a Hugging Face folder: a start to fine-tune."""
    folder = tmp_path_factory.mktemp("pretrained")
    tiny_model("neox-parallel", seed=5).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def grid(tmp_path_factory, corpus, pretrained) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("experiment") / "out"
    return out, run_experiment(spec(str(pretrained), corpus), CONFIG, out, progress=False)


VARIANTS = [f"{e}-{m}" for e in ("finetune", "scratch") for m in ("conventional", "bwsk-analyzed", "bwsk-reversible")]


def test_the_grid_writes_the_layout(grid):
    out, summary = grid
    for name in ("results.json", "README.md", "loss_curves.png", "peak_memory.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text()) == summary
    assert [row["variant"] for row in summary["variants"]] == VARIANTS
    for variant in VARIANTS:
        for name in ("model.safetensors", "config.json", "tokenizer.json", "training_results.json"):
            assert (out / variant / name).is_file(), f"{variant}/{name}"
    card = (out / "README.md").read_text()
    assert all(f"`{variant}`" in card for variant in VARIANTS)
    assert summary["perplexity_method"] in card and "no noise floor" in card
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_finetune_starts_from_the_pretrained_weights_and_scratch_from_random_ones(grid):
    out, _ = grid
    assert read_result(out / "finetune-conventional").start == "fine-tune"
    assert read_result(out / "scratch-conventional").start == "scratch"
    model_types = {variant: json.loads((out / variant / "config.json").read_text())["model_type"] for variant in VARIANTS}
    assert model_types["finetune-bwsk-reversible"] == model_types["scratch-bwsk-reversible"] == "bwsk_reversible"
    assert {model_types[v] for v in VARIANTS if "reversible" not in v} == {"gpt_neox"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_loads_and_recomputes_its_recorded_perplexity(grid, corpus, variant):
    out, summary = grid
    recorded = read_result(out / variant)
    model = AutoModelForCausalLM.from_pretrained(str(out / variant), attn_implementation="eager")
    tokenizer = load_tokenizer(out / variant)
    tokens = tokenize_splits(load_text_splits(corpus[0], SPLIT), tokenizer)
    config = summary["config"]
    for split, expected in (("test", recorded.test_perplexity), ("valid", recorded.valid_perplexity)):
        found = perplexity(model, getattr(tokens, split), window=config["eval_window"], stride=config["eval_stride"])
        assert math.isclose(found.perplexity, expected, rel_tol=1e-9), (split, found.perplexity, expected)
    if "reversible" in variant:
        generated = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert generated.shape == (1, 7)


def test_seeds_give_a_noise_floor_beside_each_difference(tmp_path, corpus):
    zoo = spec("pythia-70m", corpus, tiny=True, layers=1)
    summary = run_experiment(
        zoo, CONFIG, tmp_path / "out", seeds=2, experiments=("scratch",), modes=("conventional", "analyzed"), progress=False
    )
    conventional, analyzed = summary["variants"]
    assert [run["seed"] for run in conventional["runs"]] == [0, 1]
    assert (tmp_path / "out" / "scratch-conventional" / "seed-1" / "model.safetensors").is_file()
    tests = [run["test_perplexity"] for run in conventional["runs"]]
    assert tests[0] != tests[1]  # another seed, another initialisation
    (comparison,) = summary["comparisons"]
    floor = max(conventional["test_perplexity"]["std"], analyzed["test_perplexity"]["std"])
    assert comparison["test_perplexity"]["noise_floor"] == floor > 0
    # analyzed recomputes what conventional stores: the same function, so each seed's pair agrees
    for difference in comparison["test_perplexity"]["paired_by_seed"]:
        assert abs(difference) < 1e-6 * conventional["test_perplexity"]["mean"]
    assert comparison["test_perplexity"]["within_noise"] is True


def test_finetune_without_pretrained_weights_is_refused(tmp_path, corpus):
    with pytest.raises(BwskError, match="finetune experiment needs pretrained weights.*pretrained MODEL"):
        run_experiment(spec("pythia-70m", corpus, tiny=True, layers=1), CONFIG, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before OUT is made


def test_a_nan_run_fails_the_experiment_without_results(tmp_path, corpus):
    out = tmp_path / "out"
    diverging = dataclasses.replace(CONFIG, max_steps=4, lr=1e30)
    with pytest.raises(ExperimentFailed, match="scratch-conventional seed 0: .*no results"):
        run_experiment(spec("pythia-70m", corpus, tiny=True, layers=1), diverging, out, experiments=("scratch",), progress=False)
    assert not (out / "results.json").exists() and not (out / "README.md").exists()
    assert not (out / "scratch-conventional" / "training_results.json").exists()


def test_an_existing_experiment_is_not_overwritten_without_force(grid, corpus):
    out, _ = grid
    before = (out / "results.json").read_bytes()
    with pytest.raises(BwskError, match="already holds an experiment.*--force"):
        run_experiment(spec("pythia-70m", corpus, tiny=True), CONFIG, out, experiments=("scratch",), progress=False)
    assert (out / "results.json").read_bytes() == before


def test_the_cli_exits_1_for_a_nan_run_and_2_for_a_refused_finetune(tmp_path, corpus, capsys):
    from bwsk.cli.train import main

    common = ["--model", "pythia-70m", "--tiny", "--layers", "1", "--data", str(corpus[0]), "--split", SPLIT, "--tokenizer", str(corpus[1])]
    common += ["--max-steps", "4", "--seq-len", "16", "--eval-window", "16", "--precision", "fp32", "--device", "cpu"]
    assert main(["experiment", *common, "--out", str(tmp_path / "refused")]) == 2
    assert "finetune experiment needs pretrained weights" in capsys.readouterr().err
    diverging = ["--experiments", "scratch", "--modes", "conventional", "--lr", "1e30", "--out", str(tmp_path / "nan")]
    assert main(["experiment", *common, *diverging]) == 1
    assert "scratch-conventional seed 0" in capsys.readouterr().err
    assert not (tmp_path / "nan" / "results.json").exists()
