"""`bwsk-compile FILE --emit ir`: canonical text to stdout or to a file, written atomically, never clobbering."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import EXAMPLES

from bwsk.cli.compile import main
from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program

RESIDUAL = EXAMPLES / "residual.bwsk"
# The residual block written carelessly: comments, blank lines, indentation, CRLF line ends.
MESSY = (
    "# a comment\r\n\r\n"
    'program "residual"   level="hand"\r\n'
    "\tinput %x : f32[batch,16]   # trailing\r\n"
    "param @w : f32[16,16]\r\n"
    "%y : f32[batch,16] = S aten.add.Tensor(_,_) ( aten.mm.default(_, aten.t.default(@w)) ) %x\r\n"
    "output %y : f32[batch,16]\r\n"
)
CANONICAL = """program "residual" level="hand"

input %x : f32[batch, 16]

param @w : f32[16, 16]

%y : f32[batch, 16] = S aten.add.Tensor(_, _) aten.mm.default(_, aten.t.default(@w)) %x

output %y : f32[batch, 16]
"""


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".bwsk-"))


def test_emit_ir_prints_canonical_text_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "messy.bwsk"
    source.write_bytes(MESSY.encode())
    assert main([str(source), "--emit", "ir"]) == 0
    captured = capsys.readouterr()
    assert captured.out == CANONICAL
    assert captured.err == ""


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.bwsk")), ids=lambda p: p.name)
def test_emit_ir_of_an_example_is_its_printed_program(path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(path), "--emit", "ir"]) == 0
    out = capsys.readouterr().out
    assert out == print_program(parse(path.read_text()))
    assert parse(out) == parse(path.read_text())


def test_output_file_receives_the_text_and_stdout_stays_empty(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source, target = tmp_path / "messy.bwsk", tmp_path / "out.bwsk"
    source.write_text(MESSY)
    assert main([str(source), "--emit", "ir", "-o", str(target)]) == 0
    assert target.read_text() == CANONICAL
    assert capsys.readouterr().out == ""
    assert leftovers(tmp_path) == []


def test_existing_output_is_refused_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "out.bwsk"
    target.write_text("precious\n")
    assert main([str(RESIDUAL), "--emit", "ir", "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"{target}: already exists (pass --force to replace it)\n"
    assert target.read_text() == "precious\n"
    assert leftovers(tmp_path) == []


def test_existing_output_is_replaced_with_force(tmp_path: Path) -> None:
    target = tmp_path / "out.bwsk"
    target.write_text("precious\n")
    assert main([str(RESIDUAL), "--emit", "ir", "-o", str(target), "--force"]) == 0
    assert target.read_text() == print_program(parse(RESIDUAL.read_text()))
    assert leftovers(tmp_path) == []


def test_formatting_a_file_in_place_with_force(tmp_path: Path) -> None:
    source = tmp_path / "model.bwsk"
    source.write_text(MESSY)
    assert main([str(source), "-o", str(source), "--force"]) == 0
    assert source.read_text() == CANONICAL


def test_stdin_is_read_with_a_dash(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MESSY.encode())))
    assert main(["-", "--emit", "ir"]) == 0
    assert capsys.readouterr().out == CANONICAL


def test_stdin_errors_are_located_in_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'program "p"\n%y = Q\n')))
    assert main(["-"]) == 2
    assert capsys.readouterr().err.startswith("<stdin>:2:6: unknown combinator 'Q'")


def test_help_exits_zero_and_mentions_emit(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--emit" in out and "--force" in out and "-o OUT" in out


def test_unknown_emit_kind_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(RESIDUAL), "--emit", "bytecode"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "forced-replace"])
def test_failed_write_leaves_no_temporary_file_and_no_partial_output(
    existing: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "out.bwsk"
    if existing:
        target.write_text("precious\n")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    argv = [str(RESIDUAL), "--emit", "ir", "-o", str(target)] + (["--force"] if existing else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"{target}: cannot write (No space left on device)\n"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.bwsk"] if existing else [])
    if existing:
        assert target.read_text() == "precious\n"


def test_output_into_a_missing_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(RESIDUAL), "-o", str(tmp_path / "absent" / "out.bwsk")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


@pytest.mark.sweep
def test_installed_console_script() -> None:
    script = Path(sys.executable).with_name("bwsk-compile")
    assert script.exists()
    result = subprocess.run([str(script), str(RESIDUAL), "--emit", "ir"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == print_program(parse(RESIDUAL.read_text()))


def test_outputs_get_ordinary_permissions_and_a_replaced_file_keeps_its_own(tmp_path):
    from bwsk.atomic import write_atomic

    fresh = tmp_path / "fresh.bwsk"
    write_atomic(str(fresh), "x")
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask
    kept = tmp_path / "kept.bwsk"
    kept.write_text("old")
    kept.chmod(0o640)
    write_atomic(str(kept), "new", force=True)
    assert kept.read_text() == "new" and kept.stat().st_mode & 0o777 == 0o640
