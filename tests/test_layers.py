"""The package layers hold: import-linter's contracts and ruff's banned imports pass on the tree and fail on a wrong import."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from paths import ROOT

BIN = Path(sys.executable).parent


def installed_layout(target: Path) -> Path:
    """Copy the sources as the wheel lays them out (pyproject's package-dir: passes/ is bwsk/passes, ...)."""
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(package_dirs.items(), key=lambda item: item[0].count(".")):
        shutil.copytree(ROOT / folder, target / package.replace(".", "/"), ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return target


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": str(BIN)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_hold_on_the_tree(tmp_path):
    result = lint_imports(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        ("bwsk/ir/terms.py", "import bwsk.passes.partition", "layers"),
        ("bwsk/passes/partition.py", "import bwsk.frontend.zoo", "layers"),
        ("bwsk/kernels/__init__.py", "import transformers", "transformers"),
        ("bwsk/training/reversible/stack.py", "import bwsk.training.trainer.config", "Training"),
        ("bwsk/training/modes/measure.py", "import bwsk.training.distributed", "Training"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, wrong_import, contract):
    tree = installed_layout(tmp_path)
    with (tree / module).open("a") as file:
        file.write(f"\n{wrong_import}  # a layering violation\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and contract in result.stdout


def ruff_banned(paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ruff"), "check", "--select", "TID251", "--config", str(ROOT / "pyproject.toml"), *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_only_the_frontend_touches_export_fx_and_transformers():
    result = ruff_banned([ROOT / "bwsk", ROOT / "passes", ROOT / "kernels"])
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("line", ["import torch.fx", "from torch.export import export", "from transformers import AutoConfig"])
def test_the_ir_may_not_import_export_fx_or_transformers(tmp_path, line):
    bad = tmp_path / "bwsk" / "ir" / "probe.py"
    bad.parent.mkdir(parents=True)
    bad.write_text(f'"""A probe."""\n\n{line}\n')
    result = ruff_banned([bad])
    assert result.returncode != 0 and "TID251" in result.stdout
