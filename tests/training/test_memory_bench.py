"""benchmarks/memory.py end to end at tiny sizes: the table, valid JSON, no silent overwrite, one-line errors."""

from __future__ import annotations

import json
import pathlib

import pytest
from benchmark_script import benchmark

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out

SCRIPT = pathlib.Path(__file__).parents[2] / "benchmarks" / "memory.py"
TITLE = "# Training memory per mode, measured"
MODES = "## Real steps at reduced size: against depth and tokens"


@pytest.fixture(scope="module")
def bench():
    return benchmark("memory")


@pytest.mark.sweep
def test_several_sweeps_write_records_and_one_report_with_a_plot_and_refuse_to_overwrite(bench, tmp_path, capsys):
    out, doc, figure = tmp_path / "records.json", tmp_path / "memory.md", tmp_path / "memory.png"
    argv = ["--mode", "analyzed", "--sweep", "layers=1,2", "--sweep", "tokens=8,16", "--layers", "1", "--batch", "1", "--seq", "8"]
    argv += ["--repeats", "1", "--json", str(out), "--plot", str(figure), "--doc", str(doc)]
    assert bench.main(argv) == 0
    records = json.loads(out.read_text())
    assert [(r["mode"], r["layers"], r["seq"]) for r in records] == [
        (mode, layers, seq) for layers, seq in ((1, 8), (2, 8), (1, 8), (1, 16)) for mode in ("conventional", "analyzed")
    ]
    for record in records:
        assert {
            "mode",
            "layers",
            "batch",
            "seq",
            "peak_bytes",
            "activation_bytes",
            "predicted_activation_bytes",
            "step_seconds",
        } <= record.keys()
        assert record["peak_bytes"] > record["activation_bytes"] > 0 and record["step_seconds"] > 0
        assert abs(record["predicted_activation_bytes"] - record["activation_bytes"]) <= 0.1 * record["activation_bytes"]
        assert record["max_grad_difference"] < 1e-5
    assert "analyzed" in capsys.readouterr().out
    text = doc.read_text()
    assert text.startswith("# Training memory per mode, measured\n\n## Real steps at reduced size: against depth and tokens\n")
    assert "\n### pythia-70m (tiny): against depth\n" in text and "\n### pythia-70m (tiny): against tokens\n" in text
    assert "](memory.png)" in text and figure.read_bytes().startswith(b"\x89PNG")
    assert text.count("| analyzed |") == 4 and "python benchmarks/memory.py --mode analyzed" in text
    before = [path.read_bytes() for path in (out, doc, figure)]
    assert bench.main(argv) == 2
    assert "already exists" in capsys.readouterr().err and [path.read_bytes() for path in (out, doc, figure)] == before


def test_benchmark_rejects_bad_arguments_in_one_line(bench, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--sweep", "width=1,2"])
    assert stop.value.code == 2 and "layers=N" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        bench.main(["--budget", "2"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and "--budget" in error and "at most 1" in error
    assert bench.parse_sweep("tokens=64,128") == ("tokens", [64, 128])


@pytest.mark.sweep
@pytest.mark.interpreter
def test_reversible_with_torch_and_triton_seams_side_by_side(bench, tmp_path, capsys):
    """Triton seams run in the CPU interpreter here (tests/conftest.py); both rows are checked against one reference."""
    out, doc = tmp_path / "records.json", tmp_path / "memory.md"
    argv = ["--mode", "reversible", "--kernels", "torch,triton", "--layers", "2", "--batch", "1", "--seq", "8", "--repeats", "1"]
    assert bench.main([*argv, "--json", str(out), "--doc", str(doc)]) == 0
    records = json.loads(out.read_text())
    assert [(r["mode"], r["kernels"], r["label"]) for r in records] == [
        ("conventional", None, "conventional"),
        ("reversible", "torch", "reversible (torch)"),
        ("reversible", "triton", "reversible (triton)"),
    ]
    torch_seams, triton_seams = records[1:]
    assert torch_seams["grad_reference"] == triton_seams["grad_reference"] and "torch seams" in triton_seams["grad_reference"]
    assert torch_seams["max_grad_difference"] < 1e-5 and triton_seams["max_grad_difference"] < 1e-5
    assert triton_seams["activation_bytes"] > 0 and triton_seams["step_time_ratio"] > 0
    assert "reversible (triton)" in capsys.readouterr().out
    text = doc.read_text()
    assert "| reversible (torch) |" in text and "| reversible (triton) |" in text and "--kernels torch,triton" in text


def test_kernels_that_cannot_be_measured_are_one_line(bench, capsys, monkeypatch):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--kernels", "torch,cuda"])
    assert stop.value.code == 2 and "comma-separated list of" in capsys.readouterr().err
    assert bench.main(["--mode", "checkpoint", "--kernels", "triton"]) == 2
    assert "the checkpoint mode has none" in capsys.readouterr().err
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert bench.main(["--mode", "reversible", "--kernels", "auto,triton"]) == 2
    err = capsys.readouterr().err
    assert "need a CUDA device" in err and err.strip().count("\n") == 0


@pytest.mark.sweep
def test_drift_sweep_writes_its_section_and_keeps_the_rest_of_the_document(bench, tmp_path, capsys):
    out, doc, figure = tmp_path / "drift.json", tmp_path / "memory.md", tmp_path / "drift.png"
    doc.write_text(f"{TITLE}\n\n## Kept\n\ntext\n\n{MODES}\n\nthe modes' report\n\n### pythia-70m: against depth\n\n| a table |\n")
    argv = ["--drift", "--sweep", "layers=2,3", "--batch", "1", "--seq", "16", "--dtype", "bf16,fp32", "--train-steps", "2"]
    assert bench.main([*argv, "--json", str(out), "--plot", str(figure), "--doc", str(doc), "--force"]) == 0
    records = json.loads(out.read_text())
    keys = {(r["layers"], r["state"], r["dtype"], r["variant"]) for r in records}
    assert len(records) == len(keys) == 2 * 2 * 2 * 3
    for record in records:
        exact = record["variant"] == "defaults"
        assert len(record["drift"]) == record["layers"] and record["streams"] == ("float64" if exact else "float32")
        assert (record["grad_error"] == 0.0 and max(record["drift"]) == 0.0) if exact else max(record["drift"]) > 0.0
        assert 0 < record["stack_activation_bytes"] <= 3 * record["two_pairs_bytes"]
        assert record["anchor_bytes"] == record["anchors"] * (16 if exact else 8) * 16 * 64  # stream pair bytes per anchor
    text = doc.read_text()
    assert text.startswith(f"{TITLE}\n\n## Kept\n\ntext\n\n{MODES}\n\nthe modes' report\n\n### pythia-70m: against depth\n\n| a table |")
    assert "## Depth: gradient error and drift of the rebuild" in text and "](drift.png)" in text
    assert text.count("| defaults |") == 8 and figure.read_bytes().startswith(b"\x89PNG")
    assert "--dtype bf16,fp32" in text and "| fp32 streams + anchors |" in capsys.readouterr().out
    modes = ["--mode", "checkpoint", "--layers", "1", "--batch", "1", "--seq", "8", "--repeats", "1", "--doc", str(doc), "--force"]
    assert bench.main(modes) == 0
    rewritten = doc.read_text()
    assert "| checkpoint |" in rewritten and "the modes' report" not in rewritten and "## Kept\n\ntext\n" in rewritten
    assert rewritten.index("## Kept") < rewritten.index(MODES) < rewritten.index("## Depth")  # each section stays in place
    assert rewritten.count("## Depth: gradient error and drift of the rebuild") == 1 and rewritten.count("| defaults |") == 8


def test_drift_arguments_are_refused_in_one_line(bench, capsys):
    assert bench.main(["--drift", "--sweep", "tokens=8,16"]) == 2
    assert "--drift sweeps depth only" in capsys.readouterr().err
    assert bench.main(["--dtype", "bf16,fp32", "--mode", "checkpoint"]) == 2
    assert "with --drift only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        bench.main(["--drift", "--dtype", "fp16"])
    assert stop.value.code == 2 and "comma-separated list of fp32, bf16" in capsys.readouterr().err
