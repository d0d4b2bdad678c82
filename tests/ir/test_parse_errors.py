"""Malformed input: every error is one line, located at FILE:LINE:COL, from the API and the CLI."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bwsk.cli.compile import main
from bwsk.errors import BwskError, ParseError, VerifyError
from bwsk.ir.parser import decode, parse

HEADER = 'program "p"\ninput %x : f32[2, 3]\nparam @w : f32[3, 3]\n'  # the case under test starts on line 4


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    location: str  # LINE:COL in m.bwsk
    fragment: str
    kind: type[BwskError]


CASES = [
    Case(
        "unbalanced-open-paren", HEADER + "%y = B aten.relu.default(_) (aten.exp.default(_)\n", "4:49", "unexpected end of line", ParseError
    ),
    Case("unbalanced-close-paren", HEADER + "%y = aten.relu.default(%x))\n", "4:27", "unexpected ')'", ParseError),
    Case("unknown-combinator", HEADER + "%y = X %x\n", "4:6", "unknown combinator 'X' (expected one of S, K, B, C, W, I)", ParseError),
    Case("unknown-name-in-arguments", HEADER + "%y = aten.add.Tensor(%x, foo)\n", "4:26", "unknown name 'foo'", ParseError),
    Case("undefined-name", HEADER + "%y = aten.relu.default(%z)\n", "4:24", "undefined name: %z", VerifyError),
    Case(
        "duplicate-definition",
        HEADER + "%y = aten.relu.default(%x)\n%y = aten.exp.default(%x)\n",
        "5:1",
        "duplicate definition: %y is already defined above",
        VerifyError,
    ),
    Case(
        "definition-named-like-an-input",
        HEADER + "%x = aten.relu.default(%x)\n",
        "4:1",
        "duplicate definition: %x is already an input",
        VerifyError,
    ),
    Case(
        "too-many-arguments",
        HEADER + "%y = aten.relu.default(_) %x %x\n",
        "4:6",
        "aten.relu.default takes 1 argument(s) but is applied to 2",
        VerifyError,
    ),
    Case(
        "combinator-over-applied-to-a-value",
        HEADER + "%y = K %x %x %x\n",
        "4:8",
        "in %y: %x takes 0 argument(s) but is applied to 1",
        VerifyError,
    ),
    Case(
        "declared-fn-type-vs-term-arity",
        HEADER + "%f : fn(f32[2, 3], f32[2, 3]) -> f32[2, 3] = aten.relu.default(_)\n",
        "4:1",
        "(2 parameter(s)) but its term takes 1",
        VerifyError,
    ),
    Case(
        "declared-value-type-but-a-function",
        HEADER + "%f : f32[2, 3] = aten.relu.default(_)\n",
        "4:1",
        "%f is declared f32[2, 3] (0 parameter(s)) but its term takes 1",
        VerifyError,
    ),
    Case("unknown-dtype", HEADER + "%y : f33[2, 3] = aten.relu.default(%x)\n", "4:6", "unknown dtype 'f33'", ParseError),
    Case("unknown-scalar-type", HEADER + "%y : integer = aten.relu.default(%x)\n", "4:6", "unknown type 'integer'", ParseError),
    Case(
        "unknown-operator", HEADER + "%y = aten.frobnicate.default(%x)\n", "4:6", "unknown operator 'aten.frobnicate.default'", ParseError
    ),
    Case("operator-outside-torch-ops", HEADER + "%y = builtins.eval(%x)\n", "4:6", "unknown operator 'builtins.eval'", ParseError),
    Case("operator-without-overload", HEADER + "%y = aten.relu(%x)\n", "4:6", "unknown operator 'aten.relu'", ParseError),
    Case("empty-file", "", "1:1", "empty program", ParseError),
    Case("only-comments", "# nothing here\n\n", "1:1", "empty program", ParseError),
    Case("truncated-term", HEADER + "%y = aten.add.Tensor(%x, ", "4:26", "unexpected end of file", ParseError),
    Case("truncated-type", HEADER + "%y : f32[2", "4:11", "unexpected end of file (expected ',', ']')", ParseError),
    Case("truncated-header", 'program "p', "1:9", "unexpected character '\"'", ParseError),
    Case(
        "schema-too-many-positional",
        HEADER + "%y = aten.relu.default(%x, %x)\n",
        "4:6",
        "aten.relu.default takes at most 1 positional argument(s), got 2",
        ParseError,
    ),
    Case(
        "schema-unknown-keyword",
        HEADER + "%y = aten.add.Tensor(%x, %x, beta=2)\n",
        "4:6",
        "aten.add.Tensor has no argument named 'beta'",
        ParseError,
    ),
    Case(
        "positional-after-keyword",
        HEADER + "%y = aten.add.Tensor(%x, alpha=2, %x)\n",
        "4:6",
        "a positional argument follows a keyword argument",
        ParseError,
    ),
    Case(
        "use-before-definition",
        HEADER + "%y = aten.relu.default(%z)\n%z = aten.exp.default(%x)\n",
        "4:24",
        "used before its definition: %z",
        VerifyError,
    ),
    Case("undeclared-state", HEADER + "%y = aten.mm.default(%x, @v)\n", "4:26", "undeclared state: @v", VerifyError),
    Case(
        "output-type-mismatch",
        HEADER + "%y : f32[2, 3] = aten.relu.default(%x)\noutput %y : f32[3, 2]\n",
        "5:8",
        "output declared f32[3, 2] but its source is f32[2, 3]",
        VerifyError,
    ),
    Case(
        "output-of-a-function",
        HEADER + "%f = aten.relu.default(_)\noutput %f : f32[2, 3]\n",
        "5:8",
        "output %f is a function (arity 1), not a value",
        VerifyError,
    ),
    Case("missing-header", "input %x : f32[2]\n", "1:1", "a program starts with its header", ParseError),
    Case("missing-header-before-definition", "%y = I\n", "1:1", "a program starts with its header", ParseError),
    Case("second-header", HEADER + 'program "q"\n', "4:9", "a second program header", ParseError),
    Case("non-normalising-term", HEADER + "%y = S I I (S I I)\n", "4:8", "in %y: does not normalise", VerifyError),
    Case("non-normalising-discarded-argument", HEADER + "%y = K %x (S I I (S I I))\n", "4:14", "does not normalise", VerifyError),
    Case("unexpected-character", HEADER + "%y = aten.relu.default(%x) $\n", "4:28", "unexpected character '$'", ParseError),
    Case("malformed-string-escape", 'program "a\\qb"\n', "1:9", "malformed string", ParseError),
    Case("unknown-device", HEADER + '%y = aten._to_copy.default(%x, device=device("gpu"))\n', "4:39", "unknown device", ParseError),
    # Dimension expressions: integers, symbols, + - * // % and unary minus; nothing else, and bounded.
    Case("dim-call", HEADER + "input %n : f32[(__import__('os').system('touch PWNED'))]\n", "4:27", "unexpected '('", ParseError),
    Case("dim-class-chain", HEADER + "input %n : f32[(().__class__.__base__.__subclasses__())]\n", "4:18", "unexpected ')'", ParseError),
    Case("dim-attribute", HEADER + "input %n : f32[(s0.__class__)]\n", "4:17", "unexpected 's0.__class__'", ParseError),
    Case("dim-lambda", HEADER + "input %n : f32[((lambda: 0)())]\n", "4:24", "unexpected ':'", ParseError),
    Case("dim-string", HEADER + 'input %n : f32[("s0")]\n', "4:17", "unexpected '\"s0\"'", ParseError),
    Case("dim-power", HEADER + "input %n : f32[(9**9**9)]\n", "4:19", "unexpected '*'", ParseError),
    Case("dim-true-division", HEADER + "input %n : f32[(1/0)]\n", "4:18", "unexpected character '/'", ParseError),
    Case("dim-floor-division-by-zero", HEADER + "input %n : f32[(1//0)]\n", "4:18", "dimension (1//0) divides by zero", ParseError),
    Case("dim-modulo-by-constant-zero", HEADER + "input %n : f32[(s0 % (1 - 1))]\n", "4:20", "divides by zero", ParseError),
    Case("dim-overflow", HEADER + "input %n : f32[(4611686018427387904*2)]\n", "4:36", "overflows", ParseError),
    Case("dim-literal-beyond-2-62", HEADER + "input %n : f32[(s0 + 4611686018427387905)]\n", "4:22", "is beyond 2**62", ParseError),
    Case(
        "dim-negative-constant",
        HEADER + "input %n : f32[(0 - 3)]\n",
        "4:16",
        "dimension (0 - 3) is -3; a size cannot be negative",
        ParseError,
    ),
    Case("dim-negative", HEADER + "input %n : f32[2, -3]\n", "4:19", "negative dimension '-3'", ParseError),
    Case(
        "dim-huge",
        HEADER + "input %n : f32[99999999999999999999]\n",
        "4:16",
        "dimension '99999999999999999999' is beyond 2**62",
        ParseError,
    ),
    Case("dim-too-deep", HEADER + "input %n : f32[(s0" + " + s0" * 100 + ")]\n", "4:340", "nested deeper than 64 operators", ParseError),
    # Operator names resolve only to registered aten/prims overloads on tensors: no Python attribute, no I/O.
    Case("op-import", HEADER + '%y = __import__.os.system("touch PWNED")\n', "4:6", "unknown operator '__import__.os.system'", ParseError),
    Case("op-dunder-chain", HEADER + "%y = aten.__class__.__init__(%x)\n", "4:6", "unknown operator 'aten.__class__.__init__'", ParseError),
    Case(
        "op-torch-ops-dict", HEADER + "%y = torch.ops.aten.__dict__(%x)\n", "4:6", "unknown operator 'torch.ops.aten.__dict__'", ParseError
    ),
    Case("op-packet-call", HEADER + "%y = aten.add.__call__(%x, %x)\n", "4:6", "unknown operator 'aten.add.__call__'", ParseError),
    Case(
        "op-builtins-exec",
        HEADER + "%y = builtins.exec.default(\"open('PWNED', 'w')\")\n",
        "4:6",
        "unknown operator 'builtins.exec.default'",
        ParseError,
    ),
    Case("op-attrgetter", HEADER + '%y = operator.attrgetter("__class__")\n', "4:6", "unknown operator 'operator.attrgetter'", ParseError),
    Case("op-private-operator", HEADER + '%y = _operator.__import__("os")\n', "4:6", "unknown operator '_operator.__import__'", ParseError),
    Case("op-print", HEADER + '%y = aten._print.default("PWNED")\n', "4:6", "unknown operator 'aten._print.default'", ParseError),
    Case("op-save", HEADER + '%y = aten.save.default(1, "PWNED")\n', "4:6", "unknown operator 'aten.save.default'", ParseError),
    Case(
        "op-from-file",
        HEADER + '%y = aten.from_file.default("/etc/hostname", false, 4)\n',
        "4:6",
        "unknown operator 'aten.from_file.default'",
        ParseError,
    ),
    Case(
        "op-other-namespace",
        HEADER + "%y = quantized.add.default(%x, %x, 1.0, 0)\n",
        "4:6",
        "unknown operator 'quantized.add.default'",
        ParseError,
    ),
    Case(
        "int-literal-too-long",
        HEADER + "%y = aten.mul.Scalar(%x, " + "9" * 5000 + ")\n",
        "4:26",
        "integer literal of 5000 digits (at most 4300)",
        ParseError,
    ),
    Case("control-character-is-escaped", HEADER + "%y = \x1b]0;PWNED\x07\n", "4:6", "unexpected character '\\x1b'", ParseError),
]


def parse_error(text: str | bytes, filename: str = "m.bwsk") -> BwskError:
    with pytest.raises(BwskError) as info:
        parse(decode(text, filename) if isinstance(text, bytes) else text, filename)
    return info.value


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_error_is_located_and_one_line(case: Case) -> None:
    error = parse_error(case.text)
    assert type(error) is case.kind
    rendered = str(error)
    assert rendered.startswith(f"m.bwsk:{case.location}: "), rendered
    assert case.fragment in rendered
    assert "\n" not in rendered and "\r" not in rendered


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cli_reports_error_as_one_line_with_exit_code_2(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "m.bwsk"
    path.write_text(case.text)
    assert main([str(path), "--emit", "ir"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"{path}:{case.location}: ")
    assert case.fragment in captured.err
    assert "Traceback" not in captured.err


BINARY = [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "1:1", "not UTF-8 text: byte 0x89"),
    (b'program "p"\ninput %x : f32[2]\n\xff\xfe', "3:1", "not UTF-8 text: byte 0xff"),
    (b'program "p"\x00\x01', "1:12", "not text: NUL byte"),
]


@pytest.mark.parametrize(("data", "location", "fragment"), BINARY, ids=["png", "latin1-tail", "nul"])
def test_binary_garbage_is_a_located_parse_error(data: bytes, location: str, fragment: str) -> None:
    error = parse_error(data, "g.bin")
    assert isinstance(error, ParseError)
    assert str(error).startswith(f"g.bin:{location}: ")
    assert fragment in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize(("data", "location", "fragment"), BINARY, ids=["png", "latin1-tail", "nul"])
def test_cli_rejects_binary_file(data: bytes, location: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "g.bin"
    path.write_bytes(data)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{path}:{location}: ") and fragment in err


def test_error_location_uses_the_given_file_name() -> None:
    assert str(parse_error("", "dir/model.bwsk")).startswith("dir/model.bwsk:1:1: ")
    assert str(parse_error("")).startswith("m.bwsk:1:1: ")


def test_message_with_newlines_renders_as_one_line() -> None:
    rendered = ParseError("first\nsecond\r\n  third", hint="a\nb").render()
    assert "\n" not in rendered and "\r" not in rendered
    assert rendered.startswith("first") and rendered.endswith(")") and "third" in rendered


@pytest.mark.sweep
def test_cli_in_a_subprocess_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.bwsk"
    path.write_text(HEADER + "%y = X %x\n")
    result = subprocess.run([sys.executable, "-m", "bwsk.cli.compile", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"{path}:4:6: unknown combinator 'X' (expected one of S, K, B, C, W, I)\n"
