"""`benchmarks/memory.py --frontier` as a user runs it: the table, JSON, plot and its own section of the document
(the rest kept), and one-line refusals."""

from __future__ import annotations

import json

import pytest
from benchmark_script import benchmark

pytest.importorskip("pulp")

pytestmark = pytest.mark.sweep  # tens of seconds: `make check` (CI) runs it, `make test` and `make test-fast` leave it out


def test_frontier_writes_table_json_plot_and_its_section(tmp_path, capsys):
    doc = tmp_path / "memory.md"
    doc.write_text("# Training memory per mode, measured\n\n## Another section\n\nkept as it is\n")
    args = ["--frontier", "0.6,0.3", "--model", "pythia-70m", "--layers", "1", "--batch", "1", "--seq", "16"]
    outputs = ["--json", str(tmp_path / "f.json"), "--plot", str(tmp_path / "f.png"), "--doc", str(doc)]
    assert benchmark("memory").main([*args, *outputs, "--force"]) == 0
    captured = capsys.readouterr()
    assert "pythia-70m: torch SAC ILP at 0.6" in captured.err  # a progress line per step: stderr is not a terminal here
    printed = captured.out
    assert "| 0.3 |" in printed and "| 0.6 |" in printed and "no more recompute than the ILP at" in printed
    points = json.loads((tmp_path / "f.json").read_text())["points"]
    assert {p["planner"] for p in points} == {"conventional", "checkpoint", "analyzed", "torch SAC ILP", "reversible"}
    assert sorted({p["budget"] for p in points if p["budget"] is not None}) == [0.3, 0.6]
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    text = doc.read_text()
    assert "## Another section\n\nkept as it is" in text and "## The memory/recompute frontier" in text
    assert "![activation bytes against recompute FLOPs](f.png)" in text and "Target " in text
    assert benchmark("memory").main([*args, *outputs]) == 2  # outputs exist: not replaced without --force
    assert "already exists (pass --force to replace it)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,said",
    [
        (["--frontier", "0.3,1.5"], "expected fractions of conventional activation memory in (0, 1]"),
        (["--frontier", "0.3", "--fake", "--fit", "24GiB"], "--frontier and --fit are separate measurements"),
    ],
)
def test_frontier_arguments_are_refused_in_one_line(argv, said, capsys):
    try:
        code = benchmark("memory").main(argv)
    except SystemExit as exit:  # argparse's own refusal
        code = exit.code
    assert code == 2
    captured = capsys.readouterr()
    message = (captured.out + captured.err).strip().splitlines()[-1]
    assert said in message
