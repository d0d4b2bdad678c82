"""The tree passes ruff's lint rules and format (pyproject.toml), as CI sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from paths import ROOT

RUFF = Path(sys.executable).parent / "ruff"
TREE = ["bwsk", "passes", "kernels", "tests", "benchmarks"]


def test_ruff_check_passes():
    result = subprocess.run([str(RUFF), "check", *TREE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_ruff_format_is_applied():
    result = subprocess.run([str(RUFF), "format", "--check", *TREE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
