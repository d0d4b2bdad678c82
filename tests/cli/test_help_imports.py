"""--help is fast because it imports nothing heavy: the commands parse their arguments before torch, transformers or the grammar load."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "lark", "triton")


@pytest.mark.parametrize(
    ("module", "argv"), [("bwsk.cli.train", ["--help"]), ("bwsk.cli.train", ["experiment", "--help"]), ("bwsk.cli.compile", ["--help"])]
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
