"""`bwsk-train` on hostile or broken inputs: every refusal is exit 2 and one stderr line, no traceback, no payload run,
no folder created, and a run folder it refuses to resume is left byte for byte as it was.

Classes (each with at least two variants): trust taken from a run folder, checks that read another file than
transformers (a `configuration_files` redirection, a weights index), tampered run folders, bad flags, NaN from
flags (the divergence path, exit 1), SIGTERM (exit 143 with the resume command), and bugs (exit 3, a log file).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from cli.train_runs import PROGRESS, one_line_error, run
from frontend.hostile_archives import write_remote_code_directory
from frontend.hostile_folders import HOSTILE_FOLDERS, armed_pickle_directory, edit_json_file
from safetensors.torch import load_file, save_file
from training.tiny_models import tiny_model
from training.tiny_text import write_corpus

from bwsk.cli import train as cli
from bwsk.training.experiments import runs
from bwsk.training.trainer.checkpoint import latest_checkpoint
from bwsk.training.trainer.run_folder import RESULTS_FILE

FAST = ["--precision", "fp32", "--device", "cpu", "--seq-len", "16", "--lr", "3e-3"]
ZOO = ["pythia-70m", "--tiny", "--layers", "1"]


def refused(argv, capsys, code: int = 2) -> str:
    """The one stderr line of a run that exits with `code`."""
    return one_line_error(argv, capsys, code).rstrip("\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder holding corpus.txt and tokenizer.json."""
    folder = tmp_path_factory.mktemp("inputs")
    write_corpus(folder, lines=80)
    return folder


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory) -> Path:
    """A run started from relative paths (so run.json must make them absolute), finished, with checkpoints."""
    out = tmp_path_factory.mktemp("runs") / "run"
    argv = [*ZOO, "--data", "corpus.txt", "--tokenizer", "tokenizer.json", *FAST, "--max-steps", "4", "--checkpoint-every", "2"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(inputs)
        assert cli.main([*argv, "--out", str(out)]) == 0
    return out


@pytest.fixture
def resumable(finished, tmp_path) -> Path:
    """A copy of the finished run without its results: `--resume` continues it from its last checkpoint."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    (copy / RESULTS_FILE).unlink()
    return copy


def refused_resume(folder: Path, capsys, *extra: str) -> str:
    """`--resume folder` is refused in one line and leaves the folder as it was."""
    before = snapshot(folder)
    line = refused(["--resume", folder, *extra], capsys)
    assert snapshot(folder) == before
    return line


def checkpoint_of(run_folder: Path) -> Path:
    return latest_checkpoint(run_folder / "checkpoints")


# --- a run that is fine resumes from any folder -------------------------------------------------------------


@pytest.mark.slow
def test_run_json_holds_absolute_paths_hashes_and_the_version_and_resumes_from_anywhere(resumable, tmp_path, capsys, monkeypatch):
    document = json.loads((resumable / "run.json").read_text())
    inputs = document["inputs"]
    assert Path(inputs["data"]).is_absolute() and Path(inputs["tokenizer"]).is_absolute()
    assert set(inputs["sha256"]) == {"data", "tokenizer"} and all(len(digest) == 64 for digest in inputs["sha256"].values())
    assert document["bwsk_version"] and inputs["trust_remote_code"] is False and inputs["trust_pickle"] is False
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run(["--resume", resumable], capsys)
    assert code == 0, err
    assert json.loads((resumable / RESULTS_FILE).read_text())["steps"] == 4


# --- trust is never inherited --------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["trust_remote_code", "trust_pickle"])
@pytest.mark.parametrize("recorded", [True, False], ids=["recorded-in-run.json", "not-recorded"])
def test_trust_is_never_taken_from_a_run_folder(flag, recorded, resumable, tmp_path, capsys):
    """run.json sends the resume to a model folder with its own code or pickled weights; trust recorded or not, nothing runs."""
    marker, model = tmp_path / "marker", tmp_path / "model"
    if flag == "trust_remote_code":
        write_remote_code_directory(model, marker)
    else:
        armed_pickle_directory(model, marker)
    edit_json_file(resumable / "run.json", lambda d: d["inputs"].update({"model": str(model), flag: recorded}))
    line = refused_resume(resumable, capsys)
    if recorded:
        assert f"started with --{flag.replace('_', '-')}" in line and "never taken from a run folder" in line
    else:
        assert ("needs its own Python code" if flag == "trust_remote_code" else "refusing to unpickle") in line
    assert not marker.exists()


# --- the checks read what transformers reads ----------------------------------------------------------------


def model_folder(folder: Path) -> Path:
    """A tiny GPT-NeoX causal LM saved as a Hugging Face folder (safetensors)."""
    tiny_model("neox-parallel").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", HOSTILE_FOLDERS)
def test_a_model_folder_is_checked_as_transformers_reads_it(case, inputs, tmp_path, capsys):
    tamper, message = HOSTILE_FOLDERS[case]
    marker, folder = tmp_path / "marker", model_folder(tmp_path / "model")
    tamper(folder, marker)
    capsys.readouterr()  # transformers' own progress bar while saving the folder
    started = time.perf_counter()
    data = ["--data", inputs / "corpus.txt", "--tokenizer", inputs / "tokenizer.json"]
    line = refused([folder, *data, *FAST, "--max-steps", "1", "--out", tmp_path / "out"], capsys)
    assert message in line and not marker.exists() and not (tmp_path / "out").exists()
    assert time.perf_counter() - started < 10  # refused from the files, not after building a million layers


# --- tampered run folders -------------------------------------------------------------------------------------


def state_json(edit):
    def tamper(run_folder: Path) -> None:
        path = checkpoint_of(run_folder) / "state.json"
        if callable(edit):
            edit_json_file(path, edit)
        else:
            path.write_text(edit)

    return tamper


def tensors(name: str, edit):
    def tamper(run_folder: Path) -> None:
        path = checkpoint_of(run_folder) / name
        saved = load_file(path)
        edit(saved)
        save_file(saved, path)

    return tamper


def raw_bytes(name: str, edit):
    def tamper(run_folder: Path) -> None:
        path = checkpoint_of(run_folder) / name
        path.write_bytes(edit(path.read_bytes()))

    return tamper


def run_json(edit):
    def tamper(run_folder: Path) -> None:
        if callable(edit):
            edit_json_file(run_folder / "run.json", edit)
        else:
            (run_folder / "run.json").write_text(edit)

    return tamper


def first_key(saved: dict) -> str:
    return sorted(saved)[0]


TAMPERED = {
    "state.json empty": (state_json(""), "unreadable checkpoint state"),
    "state.json a list": (state_json("[]"), "not a checkpoint's state"),
    "state step text": (state_json(lambda s: s["trainer"].update(step="4")), "trainer.step must be a whole number"),
    "state step missing": (state_json(lambda s: s["trainer"].pop("step")), "trainer: no step"),
    "state batch beyond the epoch": (state_json(lambda s: s["trainer"].update(batch=10**6)), "of an epoch of"),
    "state epoch far ahead": (state_json(lambda s: s["trainer"].update(epoch=10**30)), "is not batch"),
    "state loss NaN": (state_json(lambda s: s["trainer"].update(last_loss=float("nan"))), "last_loss must be a finite number"),
    "optimizer settings": (state_json(lambda s: s["optimizer"]["param_groups"][0].update(eps=1.0)), "parameter groups differ"),
    "optimizer lr text": (state_json(lambda s: s["optimizer"]["param_groups"][0].update(lr="x")), "parameter groups differ"),
    "weights truncated": (raw_bytes("model.safetensors", lambda b: b[:-100]), "unreadable tensors"),
    "weights header oversized": (raw_bytes("model.safetensors", lambda b: (2**40).to_bytes(8, "little") + b[8:]), "unreadable tensors"),
    "weights empty": (raw_bytes("model.safetensors", lambda b: b""), "unreadable tensors"),
    "weights wrong shape": (
        tensors("model.safetensors", lambda t: t.update({first_key(t): t[first_key(t)].flatten()[:-1].clone()})),
        "of shape",
    ),
    "weights missing": (tensors("model.safetensors", lambda t: t.pop(first_key(t))), "lacks"),
    "rng wrong size": (tensors("rng.safetensors", lambda t: t.update(cpu=t["cpu"][:100].clone())), "rng.safetensors: cpu is"),
    "rng wrong dtype": (tensors("rng.safetensors", lambda t: t.update(cpu=t["cpu"].float())), "rng.safetensors: cpu is"),
    "optimizer moment wrong shape": (
        tensors("optimizer.safetensors", lambda t: t.update({"0.exp_avg": torch.zeros(3)})),
        "exp_avg has shape",
    ),
    "optimizer moment missing": (tensors("optimizer.safetensors", lambda t: t.pop("0.exp_avg_sq")), "expected the tensors"),
    "run.json empty": (run_json(""), "run.json: unreadable"),
    "run.json a list": (run_json("[]"), "not a run description"),
    "run.json seed text": (run_json(lambda d: d["config"].update(seed="0")), "--seed must be a whole number"),
    "run.json lr NaN": (run_json(lambda d: d["config"].update(lr=float("nan"))), "--lr must be a finite number"),
    "run.json model a number": (run_json(lambda d: d["inputs"].update(model=5)), "inputs.model must be text"),
    "run.json without inputs": (run_json(lambda d: d.pop("inputs")), "does not name the run's inputs"),
    "run.json without config": (run_json(lambda d: d.pop("config")), "not a run description"),
    "run.json world size text": (run_json(lambda d: d.update(world_size="1")), "world_size must be a whole number"),
    "latest.json outside": (
        lambda r: (r / "checkpoints" / "latest.json").write_text(json.dumps({"folder": "../../x", "step": 4})),
        "missing checkpoint folder",
    ),
    "metrics shorter than recorded": (lambda r: (r / "metrics.jsonl").write_text(""), "shorter than the checkpoint recorded"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_run_folder_is_refused_and_left_as_it_was(case, resumable, capsys):
    tamper, message = TAMPERED[case]
    tamper(resumable)
    assert message in refused_resume(resumable, capsys)


def run_on_own_inputs(inputs: Path, tmp_path: Path, capsys) -> Path:
    """A short run on a copy of the inputs in tmp_path/inputs, its results removed (so it can be resumed); its folder."""
    shutil.copytree(inputs, tmp_path / "inputs")
    data = ["--data", tmp_path / "inputs" / "corpus.txt", "--tokenizer", tmp_path / "inputs" / "tokenizer.json"]
    out = tmp_path / "run"
    assert run([*ZOO, *data, *FAST, "--max-steps", "2", "--out", out], capsys)[0] == 0
    (out / RESULTS_FILE).unlink()
    return out


@pytest.mark.parametrize("changed", ["corpus.txt", "tokenizer.json"])
def test_data_or_a_tokenizer_that_changed_since_the_run_started_is_refused(changed, inputs, tmp_path, capsys):
    out = run_on_own_inputs(inputs, tmp_path, capsys)
    path = tmp_path / "inputs" / changed
    path.write_text(path.read_text().replace("the", "teh", 1))
    line = refused_resume(out, capsys)
    assert "changed since the run started" in line and ("data" if changed == "corpus.txt" else "tokenizer") in line


@pytest.mark.parametrize("moved", ["corpus.txt", "tokenizer.json"])
def test_moved_inputs_are_named_without_suggesting_a_dataset(moved, inputs, tmp_path, capsys):
    out = run_on_own_inputs(inputs, tmp_path, capsys)
    (tmp_path / "inputs" / moved).unlink()
    line = refused_resume(out, capsys)
    assert str(tmp_path / "inputs" / moved) in line and "datasets" not in line


# --- flags ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--warmup-steps", "-5"], "--warmup-steps must be at least 0, not -5"),
        (["--min-lr-ratio", "2"], "--min-lr-ratio must be from 0 to 1, not 2.0"),
        (["--budget", "2"], "--budget 2.0: a fraction of conventional activation memory must be above 0 and at most 1"),
        (["--budget", "6GB"], "--budget '6GB': unknown unit 'GB' (use B, KiB, MiB, GiB or TiB)"),
        (["--mode", "analyzed", "--budget", "1KiB"], "the analyzed mode's budget 1 KiB (1 KiB at the planned shape) is below its floor"),
        (["--seed", "-1"], "--seed must be from 0 to 4294967295"),
        (["--seed", str(2**70)], "--seed must be from 0 to 4294967295"),
        (["--seed", "4294967295", "--seeds", "2"], "would run seeds up to 4294967296"),
        (["--device", "meta"], "unknown device 'meta'"),
        (["--device", "cuda:0x"], "unknown device 'cuda:0x'"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--adam-eps", "-1"], "--adam-eps must be a finite number >= 0"),
        (["--seq-len", "100000"], "exceeds the model's"),
        (["--batch-size", "100000"], "fewer than one batch"),
    ],
)
def test_bad_flags_are_refused_with_the_range_before_any_folder_is_made(flags, message, inputs, tmp_path, capsys):
    data = ["--data", inputs / "corpus.txt", "--tokenizer", inputs / "tokenizer.json"]
    out = tmp_path / "deep" / "out"
    assert message in refused([*ZOO, *data, *FAST, "--max-steps", "1", *flags, "--out", out], capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["a-file/out", "a-file/deeper/out", "/proc/self/bwsk-out"])
def test_an_out_folder_that_cannot_be_made_is_refused_before_the_work(where, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("mine")
    data = ["--data", inputs / "corpus.txt", "--tokenizer", inputs / "tokenizer.json"]
    line = refused([*ZOO, *data, *FAST, "--max-steps", "1", "--out", where], capsys)
    assert ("is a file" in line) if where.startswith("a-file") else ("cannot write in /proc/self" in line)
    assert (tmp_path / "a-file").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["a-file"]


@pytest.mark.parametrize("flags", [["--adam-eps", "0"], ["--lr", "1e308"]])
@pytest.mark.parametrize("steps", ["1", "3"])
def test_nan_from_flags_takes_the_divergence_path(flags, steps, inputs, tmp_path, capsys):
    data = ["--data", inputs / "corpus.txt", "--tokenizer", inputs / "tokenizer.json"]
    line = refused([*ZOO, *data, *FAST, "--max-steps", steps, *flags, "--out", tmp_path / "out"], capsys, code=1)
    assert "no results were written" in line and ("nan" in line or "inf" in line)
    assert not (tmp_path / "out" / RESULTS_FILE).exists() and not (tmp_path / "out" / "model.safetensors").exists()
    for record in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines():  # every line is strict JSON: no NaN reached it
        json.loads(record, parse_constant=lambda constant: pytest.fail(f"{constant} in metrics.jsonl"))


@pytest.mark.parametrize("extra", [["--out", "x"], ["--lr", "1"], ["pythia-70m"]])
def test_resume_takes_no_settings_but_trust(extra, resumable, capsys):
    assert "takes the run's own settings" in refused(["--resume", resumable, *extra], capsys)


# --- SIGTERM ---------------------------------------------------------------------------------------------------


def test_sigterm_before_training_stops_at_once_leaving_no_folder(inputs, tmp_path, capsys, monkeypatch):
    prepare = runs.prepare_data

    def terminated_while_loading(spec):
        signal.raise_signal(signal.SIGTERM)
        return prepare(spec)

    monkeypatch.setattr(runs, "prepare_data", terminated_while_loading)
    data = ["--data", inputs / "corpus.txt", "--tokenizer", inputs / "tokenizer.json"]
    line = refused([*ZOO, *data, *FAST, "--max-steps", "1", "--out", tmp_path / "out"], capsys, code=143)
    assert line == "bwsk-train: terminated (SIGTERM)" and not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_during_a_validation_checkpoints_and_names_the_resume(inputs, tmp_path, capsys, monkeypatch):
    from bwsk.training.trainer import run as trainer

    measure = trainer.perplexity

    def terminated_in_validation(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return measure(*args, **kwargs)

    monkeypatch.setattr(trainer, "perplexity", terminated_in_validation)
    data = ["--data", inputs / "corpus.txt", "--tokenizer", inputs / "tokenizer.json"]
    out = tmp_path / "out"
    line = refused([*ZOO, *data, *FAST, "--max-steps", "3", "--eval-every", "2", "--out", out], capsys, code=143)
    assert "terminated (SIGTERM) during the validation at step 2; checkpoint saved" in line and f"--resume {out}" in line
    assert checkpoint_of(out) is not None and not (out / RESULTS_FILE).exists()
    monkeypatch.undo()
    code, _, err = run(["--resume", out], capsys)
    assert code == 0, err


SLOW_STEPS = """
import sys, time
from bwsk.training.trainer.run_folder import MetricsLog
append = MetricsLog.append
MetricsLog.append = lambda self, record: (time.sleep(0.5), append(self, record))[1]
from bwsk.cli.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.sweep
def test_sigterm_from_outside_checkpoints_exits_143_and_the_run_resumes_from_another_folder(inputs, tmp_path, capsys, monkeypatch):
    """A real signal from another process, mid-run; then `--resume` from another working directory (in this process:
    the terminated one is gone, so all the resume has is the run folder)."""
    out = tmp_path / "run"
    argv = [*ZOO, "--data", "corpus.txt", "--tokenizer", "tokenizer.json", *FAST, "--max-steps", "12", "--out", str(out)]
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SLOW_STEPS), *argv], cwd=inputs, stderr=subprocess.PIPE, text=True
    )  # each step sleeps 0.5 s: the signal lands long before the run would end
    deadline = time.monotonic() + 120
    while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    lines = [line for line in err.splitlines() if not PROGRESS.match(line)]
    assert child.returncode == 143 and len(lines) == 1 and "Traceback" not in err, err
    assert "terminated (SIGTERM) at step" in lines[0] and f"continue with: bwsk-train --resume {out}" in lines[0]
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert json.loads((checkpoint_of(out) / "state.json").read_text())["trainer"]["step"] == step < 12
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["--resume", out], capsys)
    assert code == 0, err
    assert json.loads((out / RESULTS_FILE).read_text())["steps"] == 12


# --- bugs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,target",
    [
        ([*ZOO, "--data", "x", "--out", "o"], "bwsk.training.experiments.runs.run_training"),
        (["experiment", "--model", "pythia-70m", "--data", "x", "--out", "o"], "bwsk.training.experiments.grid.run_experiment"),
    ],
)
def test_a_bug_is_one_line_exit_3_with_the_traceback_in_a_log(argv, target, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("BWSK_DEBUG", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug\nwith a second line")

    monkeypatch.setattr(target, bug)
    line = refused(argv, capsys, code=3)
    assert "internal error: ZeroDivisionError: a bug" in line and "second line" not in line
    logs = list(tmp_path.glob("bwsk-train-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in line
    assert "Traceback" in logs[0].read_text() and "with a second line" in logs[0].read_text()
