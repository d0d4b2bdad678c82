"""--help is fast because it imports nothing heavy: the commands parse their arguments before torch, transformers or the grammar load."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "lark", "triton")


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("bwsk.cli.train", ["--help"]),
        ("bwsk.cli.train", ["experiment", "--help"]),
        ("bwsk.cli.compile", ["--help"]),
        ("bwsk.cli.demo", ["--help"]),
    ],
)
def test_help_loads_no_heavy_module(module: str, argv: list[str]):
    script = (
        "import contextlib, io, sys\n"
        f"from {module} import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
        "assert 'usage:' in out.getvalue()\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.sweep
def test_the_startup_benchmark_reports_every_command_and_what_it_imports(tmp_path):
    out = tmp_path / "startup.json"
    script = pathlib.Path(__file__).parents[2] / "benchmarks" / "startup.py"
    done = subprocess.run(
        [sys.executable, str(script), "--repeats", "1", "--top", "2", "--json", str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["command"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"python -c pass", "bwsk-train --help", "bwsk-train experiment --help", "bwsk-compile --help", "bwsk-demo --help"}
    for row in rows.values():
        assert row["median_s"] > 0 and len(row["slowest_imports"]) == 2 and row["heavy"] == []
        assert row["packages"] >= rows["python -c pass"]["packages"]
    assert "| bwsk-demo --help |" in done.stdout and "promise: --help under 2 s" in done.stdout
    again = subprocess.run([sys.executable, str(script), "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr  # an existing file is kept
