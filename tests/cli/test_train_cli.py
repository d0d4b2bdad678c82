"""`bwsk-train` end to end on tiny models: the demo, runs from zoo names and folders, refusals, exit codes."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys

import pytest
from cli.train_runs import one_line_error, run
from training.tiny_models import tiny_model
from training.tiny_text import write_corpus

from bwsk.cli import train as cli
from bwsk.training.trainer.interrupt import TrainingInterrupted
from bwsk.training.trainer.run_folder import RESULTS_FILE

FAST = ["--precision", "fp32", "--device", "cpu", "--seq-len", "16", "--max-steps", "3", "--lr", "3e-3"]


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path, lines=80)


@pytest.mark.sweep  # the demo's own settings (6 layers, 16 x 32 tokens, two modes): over 10 s
def test_without_arguments_the_demo_trains_and_prints_the_table(capsys):
    code, out, err = run([], capsys)
    assert code == 0, err
    assert "bwsk-train results" in out and "token-weighted" in out and "stopped: " in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["conventional"], ["reversible"])}
    assert set(rows) == {"conventional", "reversible"} and all(len(row) == 11 for row in rows.values())  # 9 columns, 2 units
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80  # nothing cut, at 80 columns
    peaks = {mode: float(row[6]) * {"KiB": 2**10, "MiB": 2**20}[row[7]] for mode, row in rows.items()}
    assert peaks["reversible"] < 0.8 * peaks["conventional"]  # the demo's setting shows the modes apart
    assert "Why the peaks differ" in out and "the layer stack outweigh" in " ".join(out.split())


@pytest.mark.slow
def test_zoo_model_from_scratch_then_an_earlier_run_as_the_start(corpus, tmp_path, capsys):
    text, tokenizer = corpus
    first, second = tmp_path / "first", tmp_path / "second"
    base = ["--data", text, "--split", "80/10/10", *FAST]
    code, out, err = run(["pythia-70m", "--tiny", "--layers", "1", "--tokenizer", tokenizer, "--out", first, *base], capsys)
    assert code == 0, err
    results = json.loads((first / RESULTS_FILE).read_text())
    assert results["start"] == "scratch" and results["steps"] == 3 and "80/10/10" in results["data"]
    code, out, err = run([first, "--mode", "checkpoint", "--out", second, *base], capsys)  # tokenizer from the run folder
    assert code == 0, err
    assert json.loads((second / RESULTS_FILE).read_text())["start"] == "fine-tune"


@pytest.mark.slow
def test_hugging_face_folder_with_seeds_writes_a_summary(corpus, tmp_path, capsys):
    text, tokenizer = corpus
    folder = tmp_path / "hf"
    tiny_model("neox-parallel").save_pretrained(folder)
    code, out, err = run([folder, "--data", text, "--tokenizer", tokenizer, "--out", tmp_path / "runs", "--seeds", "2", *FAST], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "runs" / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["test_perplexity"]["n"] == 2 and "over 2 seeds" in out


def test_an_existing_run_needs_force_and_a_finished_run_cannot_be_resumed(corpus, tmp_path, capsys):
    text, tokenizer = corpus
    argv = ["pythia-70m", "--tiny", "--layers", "1", "--data", text, "--tokenizer", tokenizer, "--out", tmp_path / "r", *FAST]
    assert run(argv, capsys)[0] == 0
    assert "already holds a run" in one_line_error(argv, capsys)
    assert run([*argv, "--force"], capsys)[0] == 0
    assert "already finished" in one_line_error(["--resume", tmp_path / "r"], capsys)


def test_a_diverging_run_exits_1_naming_the_step_with_no_results(corpus, tmp_path, capsys):
    text, tokenizer = corpus
    argv = ["pythia-70m", "--tiny", "--layers", "1", "--data", text, "--tokenizer", tokenizer, "--out", tmp_path / "nan"]
    err = one_line_error([*argv, *FAST, "--max-steps", "30", "--lr", "1e6", "--grad-clip", "0"], capsys, code=1)
    assert "at step" in err and not (tmp_path / "nan" / RESULTS_FILE).exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--max-steps", "1"], "MODEL and --out DIR are required"),
        (["pythia-70m", "--out", "o"], "--data is required"),
        (["pythia-70m", "--out", "o", "--data", "missing-corpus.txt"], "missing-corpus.txt: no such file or folder"),
        (["pythia-70m", "--out", "o", "--mode", "fast"], "invalid choice"),
        (["pythia-70m", "--out", "o", "--kernels", "cuda"], "argument --kernels: invalid choice: 'cuda'"),
        (["pythia-70m", "--out", "o", "--data", "{text}", "--tokenizer", "{tok}", "--kernels", "triton"], "the conventional mode has none"),
        (["pythia-70m", "--out", "o", "--data", "{text}", "--split", "90/20"], "split rule"),
        (
            ["pythia-70m", "--out", "o", "--data", "{text}", "--tokenizer", "{tok}", "--eval-stride", "16"],
            "shorter than the evaluation window",
        ),
        (["pythia-70m", "--out", "o", "--data", "{text}", "--tokenizer", "{tok}", "--precision", "fp16"], "needs a CUDA device"),
        (["no-such-model", "--out", "o", "--data", "{text}", "--tokenizer", "{tok}"], "no such folder, zoo model"),
        (["pythia-70m", "--out", "o", "--data", "{text}"], "pass --tokenizer"),
        (["--resume", "o", "--data", "x"], "takes the run's own settings"),
        (["--resume", "nowhere"], "not a bwsk-train run folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(extra, message, corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, tokenizer = corpus
    argv = [a.format(text=text, tok=tokenizer) for a in extra]
    if argv[0] not in ("--resume", "--max-steps"):
        argv += ["--tiny", "--layers", "1", "--seq-len", "16", "--max-steps", "1", "--device", "cpu"]
    assert message in one_line_error(argv, capsys)


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("interrupted at step 4; checkpoint saved (continue with: bwsk-train --resume o)", 4)

    monkeypatch.setattr("bwsk.training.experiments.runs.run_training", interrupted)
    err = one_line_error(["pythia-70m", "--data", "x", "--out", "o"], capsys, code=130)
    assert "--resume o" in err


def test_the_experiment_subcommand_says_clearly_when_its_runner_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bwsk.training.experiments.grid", None)
    err = one_line_error(["experiment", "--model", "m", "--data", "d", "--out", "o"], capsys)
    assert "experiment runner" in err


def _examples(help_text: str) -> list[list[str]]:
    """The example commands of a help text (continued lines joined), each as its arguments after `bwsk-train`."""
    block = help_text.split("examples:\n", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if not line.strip().startswith("#")]
    return [command[command.index("bwsk-train") + 1 :] for command in commands]


@pytest.mark.parametrize("argv", [["--help"], ["experiment", "--help"]])
def test_help_teaches_with_examples_that_parse(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(argv, capsys)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    examples = _examples(out)
    assert len(examples) >= 3
    for example in examples:  # every example names real flags and choices
        if example[:1] == ["experiment"]:
            cli._experiment_parser().parse_args(example[1:])
        else:
            cli._parser().parse_args(example)
    if argv == ["--help"]:
        assert [] in examples and ["--resume", "runs/rev"] in examples and "torchrun --nproc-per-node 8 --no-python bwsk-train" in out
        assert any("--distributed" in example for example in examples) and "--split proxy" in out


@pytest.mark.slow
def test_the_experiment_prints_a_line_per_run_and_a_bar_over_the_runs_on_a_terminal(corpus, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    text, tokenizer = corpus
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["experiment", "--model", "pythia-70m", "--tiny", "--layers", "1", "--experiments", "scratch", "--modes", "conventional"]
    argv += ["--seeds", "2", "--data", text, "--tokenizer", tokenizer, "--out", tmp_path / "grid", *FAST, "--max-steps", "2"]
    assert cli.main([str(a) for a in argv]) == 0
    shown = " ".join(terminal.getvalue().split())  # as a terminal shows it, lines wrapped at its width
    for seed in (0, 1):
        assert re.search(
            rf"run {seed + 1}/2 scratch-conventional seed {seed}: test ppl [\d.]+, peak [\d.]+ [KMG]iB, [\d.]+ s, 2 steps", shown
        )
    assert re.search(r"experiment .*2/2 runs", shown)  # the bar over the runs, finished


def test_triton_seams_without_cuda_or_the_interpreter_are_one_line_before_the_run(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    text, tokenizer = corpus
    argv = ["pythia-70m", "--tiny", "--layers", "1", "--data", text, "--tokenizer", tokenizer, "--out", tmp_path / "r", *FAST]
    err = one_line_error([*argv, "--mode", "reversible", "--kernels", "triton"], capsys)
    assert "need a CUDA device" in err and "TRITON_INTERPRET=1" in err and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_kernels_a_run_used_are_recorded(corpus, tmp_path, capsys):
    text, tokenizer = corpus
    argv = ["pythia-70m", "--tiny", "--layers", "1", "--data", text, "--tokenizer", tokenizer, "--out", tmp_path / "r", *FAST]
    code, out, err = run([*argv, "--mode", "reversible", "--kernels", "torch"], capsys)
    assert code == 0, err
    assert "seams of the reversible mode: torch (0 norms computed by the seams)" in out
    results = json.loads((tmp_path / "r" / RESULTS_FILE).read_text())
    assert results["config"]["kernels"] == "torch" and json.loads((tmp_path / "r" / "run.json").read_text())["config"]["kernels"] == "torch"
    assert results["conversion"]["kernels"] == "torch" and results["conversion"]["fused_norms"] == 0


@pytest.mark.slow
def test_the_experiment_gives_its_kernels_to_the_reversible_runs(corpus, tmp_path, capsys):
    text, tokenizer = corpus
    out = tmp_path / "grid"
    grid = ["experiment", "--model", "pythia-70m", "--tiny", "--layers", "1", "--experiments", "scratch"]
    inputs = ["--data", text, "--tokenizer", tokenizer, *FAST, "--max-steps", "1"]
    code, _, err = run([*grid, "--modes", "conventional,reversible", "--kernels", "torch", *inputs, "--out", out], capsys)
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["config"]["kernels"] == "torch"
    reversible = json.loads((out / "scratch-bwsk-reversible" / RESULTS_FILE).read_text())
    assert reversible["config"]["kernels"] == reversible["conversion"]["kernels"] == "torch"
    assert json.loads((out / "scratch-conventional" / RESULTS_FILE).read_text())["config"]["kernels"] == "auto"  # no seams
    err = one_line_error([*grid, "--modes", "conventional", "--kernels", "triton", *inputs, "--out", tmp_path / "no"], capsys)
    assert "the conventional mode has none" in err and not (tmp_path / "no").exists()


@pytest.mark.slow
def test_the_budget_of_an_analyzed_run_and_the_byte_target_it_meant_are_recorded(corpus, tmp_path, capsys):
    text, tokenizer = corpus
    argv = ["pythia-70m", "--tiny", "--layers", "1", "--data", text, "--tokenizer", tokenizer, *FAST, "--mode", "analyzed"]
    code, out, err = run([*argv, "--budget", "0.4", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "r" / RESULTS_FILE).read_text())
    plan = results["analyzed_plan"]
    assert results["config"]["budget"] == plan["budget"] == 0.4 and plan["budget_means"] == "0.4 of conventional activation memory"
    assert plan["target_bytes"] == int(0.4 * plan["conventional_bytes"])
    assert plan["floor_bytes"] <= plan["predicted_bytes"] <= plan["target_bytes"] and plan["recompute_flops"] > 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["analyzed_plan"] == plan
    code, out, err = run([*argv, "--budget", "1 GiB", "--out", tmp_path / "bytes"], capsys)
    assert code == 0, err
    plan = json.loads((tmp_path / "bytes" / RESULTS_FILE).read_text())["analyzed_plan"]
    assert plan["budget"] == plan["target_bytes"] == 2**30 and plan["predicted_bytes"] > 0
