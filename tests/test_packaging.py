"""The wheel carries every module and the grammar, and the installed copy works from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from paths import ROOT

pytestmark = pytest.mark.sweep  # tens of seconds: `make check` (CI) runs it, `make test` and `make test-fast` leave it out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("bwsk-*.whl")
    return found


def source_modules() -> set[str]:
    """Every module of the source tree, named by where the wheel must put it."""
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    expected = set()
    for package, folder in package_dirs.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts and not (
                package == "bwsk" and path.relative_to(ROOT / folder).parts[0] in ("passes", "kernels", "grammar")
            ):
                expected.add(package.replace(".", "/") + "/" + path.relative_to(ROOT / folder).as_posix())
    return expected


def test_the_wheel_holds_every_module_and_the_grammar(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert source_modules() <= names, sorted(source_modules() - names)
    assert "bwsk/grammar/bwsk.lark" in names
    assert {"bwsk/grammar/examples/residual.bwsk", "bwsk/grammar/examples/mlp.bwsk"} <= names


def test_the_installed_copy_compiles_a_model_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import bwsk.passes, bwsk.kernels; print(bwsk.__file__, bwsk.passes.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(Path(p).is_relative_to(site) for p in where.stdout.split())
    result = subprocess.run(
        [sys.executable, "-m", "bwsk.cli.compile", "pythia-70m", "--tiny", "--layers", "1", "--emit", "phases"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "S-phases" in result.stdout and "gpt_neox.layers.0" in result.stdout
