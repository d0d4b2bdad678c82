"""`bwsk-compile MODEL --emit ir [--verify]` as a user runs it, including every error path."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile

import pytest
import torch
from paths import EXAMPLES

from bwsk.cli.compile import main
from bwsk.ir.parser import parse


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.slow
def test_zoo_model_with_verify_prints_ir_and_the_errors(capsys):
    code, out, err = run(["gpt2", "--tiny", "--layers", "1", "--seq", "8", "--verify"], capsys)
    assert code == 0, err
    assert "verify gpt2: ok" in err and "max relative error" in err
    assert parse(out).name == "gpt2"


@pytest.mark.slow
def test_export_archive_with_stored_inputs_verifies(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Tanh())
    archive = tmp_path / "model.pt"
    torch.export.save(torch.export.export(model, (torch.randn(2, 5),)), archive)
    out_file = tmp_path / "model.bwsk"
    code, out, err = run([archive, "--verify", "-o", out_file], capsys)
    assert code == 0, err
    assert out == "" and "ok" in err
    assert parse(out_file.read_text()).inputs[0].type.shape == (2, 5)


def test_missing_file(capsys, tmp_path):
    code, _, err = run([tmp_path / "nope.pt2"], capsys)
    assert code == 2 and "nope.pt2" in one_line_error(err)


def test_not_an_archive_is_read_as_ir_and_located(tmp_path, capsys):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"\x00\x01garbage")
    code, _, err = run([junk], capsys)
    assert code == 2 and one_line_error(err).startswith(f"{junk}:1:")


def test_corrupt_archive(tmp_path, capsys):
    model = torch.nn.Linear(3, 3)
    archive = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3),)), archive)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    code, _, err = run([archive], capsys)
    assert code == 2 and "model.pt2" in one_line_error(err)


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_is_refused_without_being_unpickled(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps(_Marker(marker)))
    code, _, err = run([bad], capsys)
    line = one_line_error(err)
    assert code == 2 and "torch.export" in line and "trust" in line
    assert not marker.exists()


def test_trusted_pickle_needs_shapes_then_compiles(tmp_path, capsys):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()), path)
    code, _, err = run([path, "--trust-pickle"], capsys)
    assert code == 2 and "shape" in one_line_error(err)
    code, out, err = run([path, "--trust-pickle", "--input-shape", "3x4", "--verify"], capsys)
    assert code == 0, err
    assert parse(out).inputs[0].type.shape == (3, 4)


def test_export_failure_names_the_first_line_and_a_hint(tmp_path, capsys):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(4, 4), path)
    code, _, err = run([path, "--trust-pickle", "--input-shape", "3x5"], capsys)
    assert code == 2 and "cannot export" in one_line_error(err)


class _Branchy(torch.nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (x,))


@pytest.mark.slow
def test_unsupported_operator(tmp_path, capsys):
    archive = tmp_path / "cond.pt2"
    torch.export.save(torch.export.export(_Branchy(), (torch.randn(3),)), archive)
    code, _, err = run([archive], capsys)
    assert code == 2 and "cond" in one_line_error(err)


def test_unknown_zoo_name_suggests_the_closest(capsys):
    code, _, err = run(["gtp2"], capsys)
    assert code == 2 and "gpt2" in one_line_error(err)


def test_verify_on_ir_text_is_refused(tmp_path, capsys):
    code, _, err = run([str(EXAMPLES / "mlp.bwsk"), "--verify"], capsys)
    assert code == 2 and "--verify" in one_line_error(err)


def test_console_script_help_teaches_the_inputs():
    result = subprocess.run([sys.executable, "-m", "bwsk.cli.compile", "--help"], capture_output=True, text=True, check=True)
    for phrase in ("torch.export.save", "--verify", "--trust-pickle", "pythia-410m", "--level"):
        assert phrase in result.stdout


def test_zip_that_is_not_an_export(tmp_path, capsys):
    path = tmp_path / "thing.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    code, _, err = run([path], capsys)
    assert code == 2 and "thing.pt2" in one_line_error(err)
