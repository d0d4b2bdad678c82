"""The experiment grid: its layout (variant folders to publish, every run's working folder in runs/), Auto-loadable
variant folders whose perplexity recomputes to the recorded one and whose tokenizer has eos/bos/pad, the model card
(seed table, Hub front matter), the noise floor beside every difference, and refusals (no pretrained start, a NaN
run, an existing output)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Tokenizer
from training.tiny_models import tiny_model
from training.tiny_text import write_corpus
from transformers import AutoModelForCausalLM, AutoTokenizer

import bwsk
from bwsk.errors import BwskError
from bwsk.render.units import human_bytes
from bwsk.training.experiments.grid import ExperimentFailed, _hub_id, run_experiment
from bwsk.training.experiments.report import model_card, timing_caveat
from bwsk.training.experiments.runs import RunSpec
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import load_text_splits, load_tokenizer, tokenize_splits
from bwsk.training.trainer.evaluation import perplexity
from bwsk.training.trainer.run_folder import read_result

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out

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
PUBLISHED = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_results.json",
}
WORKING = {"run.json", "metrics.jsonl", "checkpoints"}


def _names(folder: Path) -> set[str]:
    return {item.name for item in folder.iterdir()}


def test_the_grid_writes_a_folder_to_publish_and_the_runs_beside_it(grid):
    out, summary = grid
    assert _names(out) == {"README.md", "results.json", "loss_curves.png", "peak_memory.png", "runs", *VARIANTS}
    assert json.loads((out / "results.json").read_text()) == summary
    assert [row["variant"] for row in summary["variants"]] == VARIANTS
    assert _names(out / "runs") == set(VARIANTS)
    for variant in VARIANTS:
        run = out / "runs" / variant / "seed-0"
        assert _names(out / "runs" / variant) == {"seed-0", "seeds.json"}
        published = _names(out / variant)
        own_code = {name for name in _names(run) if name.endswith(".py")}  # what a reversible model's save adds (its modeling file)
        assert published == PUBLISHED | own_code, variant
        assert not own_code or "reversible" in variant
        assert _names(run) == published | WORKING  # the run keeps its working data; the variant folder only what one uploads
        for name in published:
            assert (out / variant / name).read_bytes() == (run / name).read_bytes(), f"{variant}/{name}"
        row = next(row for row in summary["variants"] if row["variant"] == variant)
        assert row["published"] == {"folder": variant, "seed": 0, "files": sorted(published)}
        assert [run["folder"] for run in row["runs"]] == [f"runs/{variant}/seed-0"]
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"


def _front_matter(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    header, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_the_card_has_hub_metadata_and_the_seed_table(grid):
    out, summary = grid
    meta, body = _front_matter((out / "README.md").read_text())
    assert meta["library_name"] == "transformers" and "base_model" not in meta  # fine-tuned from a local folder
    assert meta["datasets"] == [summary["data"]] and {"bwsk", "reversible"} <= set(meta["tags"])
    (index,) = meta["model-index"]
    assert len(index["results"]) == len(VARIANTS)
    for result, row in zip(index["results"], summary["variants"]):
        assert result["task"]["type"] == "text-generation" and result["dataset"]["name"] == summary["data"]
        valid, test = result["metrics"]
        assert valid["type"] == test["type"] == "perplexity" and row["variant"] in valid["name"] and "test" in test["name"]
        assert valid["value"] == pytest.approx(row["valid_perplexity"]["mean"], abs=1e-4)
        assert test["value"] == pytest.approx(row["test_perplexity"]["mean"], abs=1e-4)
    header = "| variant | mode | seeds | final train loss | valid ppl | test ppl | peak memory | time | epochs |"
    assert header in body and summary["perplexity_method"] in body and "no noise floor" in body
    plan = next(row for row in summary["variants"] if row["mode"] == "analyzed")["runs"][0]["analyzed_plan"]
    assert plan["budget"] == CONFIG.budget and plan["target_bytes"] == int(CONFIG.budget * plan["conventional_bytes"])
    assert f"**Analyzed mode:** budget {plan['budget_means']}, a target of {human_bytes(plan['target_bytes'])}" in body
    tokens = summary["tokens"]["train"]
    for row in summary["variants"]:
        (run,) = row["runs"]
        epochs = 2 / ((tokens // CONFIG.seq_len) // CONFIG.batch_size)  # 2 steps of 2 x 16 tokens
        assert run["epochs"] == pytest.approx(epochs) and row["epochs"]["mean"] == pytest.approx(epochs)
        assert run["final_train_loss"] == row["final_train_loss"]["mean"] == read_result(out / row["variant"]).final_train_loss
        line = next(line for line in body.splitlines() if line.startswith(f"| `{row['variant']}` |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[2:6] == ["1", f"{run['final_train_loss']:.3f}", f"{run['valid_perplexity']:.3f}", f"{run['test_perplexity']:.3f}"]
        assert cells[8] == f"{epochs:.2f}"
    assert "**Caveat:**" in body and "on a CPU" in body and "noisy" in body and "exact" in body  # these runs ran on the cpu
    assert "trust_remote_code=True" in body or not any(name.endswith(".py") for name in _names(out / "scratch-bwsk-reversible"))


def test_the_card_names_a_hub_base_model_and_has_no_caveat_for_an_idle_accelerator(grid, tmp_path):
    _, summary = grid
    meta, body = _front_matter(
        model_card({**summary, "base_model": "EleutherAI/pythia-160m", "dataset": "wikitext", "timing_caveat": None})
    )
    assert meta["base_model"] == "EleutherAI/pythia-160m" and meta["datasets"] == ["wikitext"]
    assert all(result["dataset"]["type"] == "wikitext" for result in meta["model-index"][0]["results"])
    assert "Caveat" not in body
    assert _hub_id("EleutherAI/pythia-160m") == "EleutherAI/pythia-160m"
    assert _hub_id("pythia-70m") is None and _hub_id(str(tmp_path)) is None  # a zoo name; a local folder
    idle, busy = {"cpus": 16, "load_average": [1.0, 1.0, 2.0]}, {"cpus": 16, "load_average": [20.0, 17.5, 9.0]}
    assert timing_caveat({"cuda (NVIDIA H100)"}, idle) is None
    assert "loaded machine (load average up to 20.0 on 16 CPUs)" in timing_caveat({"cuda (NVIDIA H100)"}, busy)
    assert "on a CPU" in timing_caveat({"cuda (NVIDIA H100)", "2 x cpu (1 threads), ddp over gloo"}, {"cpus": 16, "load_average": None})


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


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_tokenizer_has_eos_bos_and_pad(grid, corpus, variant):
    out, _ = grid
    original = Tokenizer.from_file(str(corpus[1]))
    tokenizer = AutoTokenizer.from_pretrained(str(out / variant))
    end = original.token_to_id("<|endoftext|>")
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"  # the GPT-NeoX rule: bos, pad = eos
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == tokenizer.pad_token_id == end is not None
    assert tokenizer("the cat sees a dog").input_ids == original.encode("the cat sees a dog").ids
    config = json.loads((out / variant / "config.json").read_text())
    assert tokenizer.model_max_length == config.get("text_config", config)["max_position_embeddings"]
    generation = json.loads((out / variant / "generation_config.json").read_text())
    for saved in (config.get("text_config", config), generation):  # generate() stops where the tokenizer says text ends
        assert (saved["eos_token_id"], saved["bos_token_id"], saved["pad_token_id"]) == (end, end, end)


def test_seeds_give_a_noise_floor_beside_each_difference(tmp_path, corpus):
    zoo = spec("pythia-70m", corpus, tiny=True, layers=1)
    summary = run_experiment(
        zoo, CONFIG, tmp_path / "out", seeds=2, experiments=("scratch",), modes=("conventional", "analyzed"), progress=False
    )
    conventional, analyzed = summary["variants"]
    assert [run["seed"] for run in conventional["runs"]] == [0, 1]
    runs = tmp_path / "out" / "runs" / "scratch-conventional"
    assert _names(runs) == {"seed-0", "seed-1", "seeds.json"} and _names(runs / "seed-1") == _names(runs / "seed-0")
    seeds = json.loads((runs / "seeds.json").read_text())
    assert seeds["seeds"] == [0, 1] and seeds["test_perplexity"] == conventional["test_perplexity"]
    published = json.loads((tmp_path / "out" / "scratch-conventional" / "training_results.json").read_text())
    assert published["seed"] == 0 and published["test"]["perplexity"] == conventional["runs"][0]["test_perplexity"]
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
    assert _names(out) == {"runs"}  # no variant folder, results.json or card
    assert not (out / "runs" / "scratch-conventional" / "seed-0" / "training_results.json").exists()


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
