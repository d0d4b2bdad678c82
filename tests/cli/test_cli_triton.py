"""`bwsk-compile MODEL --emit triton -o FILE` writes an importable module of seam kernels; IR without couplings is refused.

Names from the input (the IR `program` name, module paths, a model folder's name) reach only
comments and the docstring, escaped: the emitted code is the same whatever they hold.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers
from paths import EXAMPLES
from seam_checks import check_against_reference, operands

from bwsk.cli.compile import main
from bwsk.kernels import runtime
from bwsk.kernels.patterns import SeamPattern
from bwsk.kernels.source import mention

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out


@pytest.fixture(scope="module")
def pythia_kernels(tmp_path_factory) -> Path:
    """`bwsk-compile pythia-70m --tiny --layers 2 --emit triton`: the file it wrote."""
    out = tmp_path_factory.mktemp("emitted") / "k.py"
    assert main(["pythia-70m", "--tiny", "--layers", "2", "--emit", "triton", "-o", str(out)]) == 0
    return out


def test_emit_triton_writes_an_importable_module_of_seam_kernels(pythia_kernels):
    out = pythia_kernels
    text = out.read_text()
    assert "Model pythia-70m: 2 coupling blocks" in text and "layernorm" in text
    spec = importlib.util.spec_from_file_location("emitted_seams", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    families = {name.rsplit("_", 1)[0] for name in dir(module) if name.startswith("seam_")}
    assert families and all(hasattr(module, f"{family}_{part}") for family in families for part in ("forward", "rebuild", "backward"))


@pytest.mark.interpreter
def test_the_emitted_kernels_match_the_torch_reference(pythia_kernels):
    """The file's own kernels (not the runtime's cache) against the reference, outputs and every gradient, both directions."""
    spec = importlib.util.spec_from_file_location("emitted_seams_checked", pythia_kernels)
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


MARKER = "PWNED"  # created in the working folder by any payload below that ran
PAYLOAD = f"__import__('os').system('touch {MARKER}')"
HOSTILE_NAMES = {
    "newline": f"m\n{PAYLOAD}",
    "carriage-return": f"m\r{PAYLOAD}",
    "triple-double-quotes": f'm"""\n{PAYLOAD}\n"""',
    "triple-single-quotes": f"m'''\n{PAYLOAD}\n'''",
    "backslash-at-the-end": "m\\",
    "nul-and-hash": f"m\x00#\n{PAYLOAD}",
    "non-ascii-line-separators": f"modèle\u2028{PAYLOAD}\u0085{PAYLOAD}\x0c",
}


@pytest.fixture(scope="module")
def tiny_pythia_ir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("ir") / "pythia.bwsk"
    assert main(["pythia-70m", "--tiny", "--layers", "2", "--seq", "8", "-o", str(out)]) == 0
    return out.read_text()


@pytest.fixture(scope="module")
def plain_ir_kernels(tmp_path_factory, tiny_pythia_ir):
    """The module and text emitted from the tiny Pythia IR as printed: what every hostile program name is compared with."""
    folder = tmp_path_factory.mktemp("plain-ir")
    (folder / "plain.bwsk").write_text(tiny_pythia_ir)
    return emit_and_import(str(folder / "plain.bwsk"), folder / "plain.py")


TINY_NEOX = transformers.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=128)


@pytest.fixture(scope="module")
def plain_folder_kernels(tmp_path_factory) -> str:
    """The text emitted from a tiny GPT-NeoX folder named `plain`: what every hostile folder name is compared with."""
    folder = tmp_path_factory.mktemp("plain-folder")
    TINY_NEOX.save_pretrained(folder / "plain")
    return emit_and_import(str(folder / "plain"), folder / "plain.py", "--seq", "8")[1]


def emit_and_import(spec: str, out: Path, *extra: str):
    """Emit `spec`'s seam kernels to `out` through the CLI and import the file; the module and the file's text."""
    assert main([spec, "--emit", "triton", "--passes", "seams", "-o", str(out), *extra]) == 0
    spec_ = importlib.util.spec_from_file_location(f"emitted_{out.stem}", out)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module, out.read_text(encoding="utf-8")


def assert_same_code(hostile: str, plain: str, name: str) -> None:
    """Only the docstring differs (it names the model escaped): every statement after it is the one emitted for a plain name."""
    assert hostile.isascii() and f"\nModel {mention(name)}: 2 coupling blocks" in hostile
    hostile_tree, plain_tree = ast.parse(hostile), ast.parse(plain)
    assert [ast.dump(node) for node in hostile_tree.body[1:]] == [ast.dump(node) for node in plain_tree.body[1:]]


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_hostile_program_and_module_names_stay_in_comments_and_docstrings(tmp_path, monkeypatch, tiny_pythia_ir, plain_ir_kernels, name):
    """The IR `program` name reaches the docstring and every block's module path the comments: escaped, never code."""
    monkeypatch.chdir(tmp_path)
    assert 'program "pythia-70m"' in tiny_pythia_ir and 'from "gpt_neox.layers.' in tiny_pythia_ir
    hostile = tiny_pythia_ir.replace('program "pythia-70m"', f"program {json.dumps(name)}", 1)
    prefix = name.replace("\n", "\r").replace(".", "")  # a module path: the block is what precedes `.layers.N`
    hostile = hostile.replace('from "gpt_neox.layers.', f"from {json.dumps(prefix + '.layers.')[:-1]}")
    (tmp_path / "hostile.bwsk").write_text(hostile)
    plain_module, plain_text = plain_ir_kernels
    module, text = emit_and_import(str(tmp_path / "hostile.bwsk"), tmp_path / "hostile.py")
    assert_same_code(text, plain_text, name)
    assert f"#   {mention(name)} {mention(prefix + '.layers.0')} (y1)\n" in text
    assert module.PATTERNS == plain_module.PATTERNS
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("name", [HOSTILE_NAMES["newline"], f'm"""\r{PAYLOAD}#\\ modèle'], ids=["newline", "quotes-cr-backslash"])
def test_a_hugging_face_folder_with_a_hostile_name_stays_in_the_docstring(tmp_path, monkeypatch, plain_folder_kernels, name):
    """The folder's name is the program's name; the kernels emitted from it are those of a plainly named folder."""
    monkeypatch.chdir(tmp_path)
    TINY_NEOX.save_pretrained(tmp_path / name)
    _, hostile = emit_and_import(str(tmp_path / name), tmp_path / "hostile.py", "--seq", "8")
    assert_same_code(hostile, plain_folder_kernels, name)
    assert not (tmp_path / MARKER).exists()
