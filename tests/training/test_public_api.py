"""The training half's public names, and what importing it does: nothing but define names."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bwsk
import bwsk.training
from bwsk.passes.memory.result import MODES as PREDICTED_MODES
from bwsk.training.modes import MODES
from bwsk.training.modes.apply import apply_mode
from bwsk.training.reversible.convert import make_reversible, plain_autograd, set_kernels
from bwsk.training.reversible.huggingface import load_reversible, register


def _modules_after(statement: str) -> set[str]:
    script = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("statement", ["import bwsk", "import bwsk.training", "from bwsk.training.trainer.config import TrainConfig"])
def test_importing_loads_no_pass_no_transformers_and_registers_nothing(statement: str):
    loaded = _modules_after(statement)
    assert not {m for m in loaded if m.startswith(("bwsk.passes.", "bwsk.frontend.", "transformers"))}
    assert "bwsk.training.reversible.huggingface" not in loaded


def test_public_names_are_the_runtime_objects():
    for package in (bwsk, bwsk.training):
        assert package.make_reversible is make_reversible
        assert package.plain_autograd is plain_autograd
        assert package.apply_mode is apply_mode
        assert package.load_reversible is load_reversible
        assert package.register is register
        assert package.set_kernels is set_kernels
    with pytest.raises(AttributeError, match="no attribute 'convert_model'"):
        bwsk.training.convert_model  # noqa: B018


def test_the_trainer_modes_are_the_modes_the_memory_pass_predicts():
    assert MODES == PREDICTED_MODES
