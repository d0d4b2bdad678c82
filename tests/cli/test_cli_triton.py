"""`bwsk-compile MODEL --emit triton -o FILE` writes an importable module of seam kernels; IR without couplings is refused."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch
from paths import EXAMPLES
from seam_checks import check_against_reference, operands

from bwsk.cli.compile import main
from bwsk.kernels import runtime
from bwsk.kernels.patterns import SeamPattern


def test_emit_triton_writes_an_importable_module_of_seam_kernels(tmp_path):
    out = tmp_path / "k.py"
    assert main(["pythia-70m", "--tiny", "--layers", "2", "--emit", "triton", "-o", str(out)]) == 0
    text = out.read_text()
    assert "Model pythia-70m: 2 coupling blocks" in text and "layernorm" in text
    spec = importlib.util.spec_from_file_location("emitted_seams", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    families = {name.rsplit("_", 1)[0] for name in dir(module) if name.startswith("seam_")}
    assert families and all(hasattr(module, f"{family}_{part}") for family in families for part in ("forward", "rebuild", "backward"))


@pytest.mark.interpreter
def test_the_emitted_kernels_match_the_torch_reference(tmp_path):
    """The file's own kernels (not the runtime's cache) against the reference, outputs and every gradient, both directions."""
    out = tmp_path / "k.py"
    assert main(["pythia-70m", "--tiny", "--layers", "2", "--emit", "triton", "-o", str(out)]) == 0
    spec = importlib.util.spec_from_file_location("emitted_seams_checked", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, fields in module.PATTERNS.items():
        kernels = runtime.kernels_in(module, SeamPattern(**fields))
        for direction in ("forward", "rebuild"):
            inputs = operands(kernels.pattern, (3, 7, 64), torch.float32, torch.float32, seed=len(name))
            seam = functools.partial(runtime.SeamFunction.apply, kernels, direction)
            check_against_reference(kernels.pattern, direction, seam, inputs)


def test_emit_triton_without_couplings_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "k.py"
    assert main([str(EXAMPLES / "mlp.bwsk"), "--emit", "triton", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no coupling blocks" in err
    assert not out.exists()
