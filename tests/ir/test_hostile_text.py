"""Hostile IR text: nothing it names runs, every refusal is one located line, and reading it stays cheap.

Each input goes through the command line as a user would run it on an untrusted file
(`bwsk-compile FILE --emit json -o OUT`, which parses, verifies and analyses): exit 2,
exactly one line on stderr, no traceback, no output file, and the marker file that a
payload would create if anything it names ran does not exist.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from bwsk.cli.compile import main
from bwsk.errors import ParseError
from bwsk.ir.dims import MAX_DEPTH
from bwsk.ir.lexer import MAX_NESTING
from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.passes.classify.check import check_verdicts
from bwsk.passes.dataflow import trace

MARKER = "PWNED"  # created in the working folder by any payload below that ran
HEADER = 'program "p"\ninput %x : f32[2]\n'  # the case under test starts on line 3
TOUCH = f"__import__('os').system('touch {MARKER}')"


@dataclass(frozen=True)
class Hostile:
    name: str
    text: str
    location: str | None  # LINE:COL, or None for an evaluation error (not tied to a token)
    fragment: str


def nested(opening: str, inner: str, closing: str, depth: int) -> str:
    return opening * depth + inner + closing * depth


HOSTILE = [
    Hostile("dim-payload", f"input %n : f32[({TOUCH})]\n", "3:27", "unexpected '('"),
    Hostile(
        "dim-class-chain", "input %n : f32[(().__class__.__base__.__subclasses__()[-1].__init__.__globals__)]\n", "3:18", "unexpected ')'"
    ),
    Hostile("dim-power-tower", "input %n : f32[(9**9**9)]\n", "3:19", "unexpected '*'"),
    Hostile("dim-true-division", "input %n : f32[(1/0)]\n", "3:18", "unexpected character '/'"),
    Hostile("dim-floor-division-by-zero", "input %n : f32[(s0 + 1//0)]\n", "3:23", "divides by zero"),
    Hostile("dim-deep-parentheses", "input %n : f32[" + nested("(", "s0", ")", 100_000) + "]\n", "3:271", "nested deeper than 256"),
    Hostile("dim-long-sum", "input %n : f32[(s0" + " + s0" * 100_000 + ")]\n", "3:340", f"deeper than {MAX_DEPTH} operators"),
    Hostile("dim-negative", "input %n : f32[-1]\n", "3:16", "negative dimension"),
    Hostile("dim-huge", "input %n : f32[" + "9" * 100_000 + "]\n", "3:16", "(100000 characters) is beyond 2**62"),
    Hostile("term-deep-parentheses", "%y = " + nested("(", "%x", ")", 100_000) + "\n", "3:262", "nested deeper than 256"),
    Hostile("term-deep-primitives", "%y = " + nested("aten.neg.default(", "%x", ")", 100_000) + "\n", "3:4374", "nested deeper than 256"),
    Hostile("term-deep-lists", "%y = aten.view.default(%x, " + nested("[", "2", "]", 100_000) + ")\n", "3:283", "nested deeper than 256"),
    Hostile("term-long-spine", "%y = " + "I " * 100_000 + "%x\n", "3:520", "an application to more than 256 arguments"),
    Hostile("type-deep-tuples", "input %t : " + nested("(", "f32[2]", ",)", 100_000) + "\n", "3:268", "nested deeper than 256"),
    Hostile("int-literal-100k-digits", "%y = aten.mul.Scalar(%x, " + "7" * 100_000 + ")\n", "3:26", "integer literal of 100000 digits"),
    Hostile("op-import", f'%y = __import__.os.system("touch {MARKER}")\n', "3:6", "unknown operator '__import__.os.system'"),
    Hostile("op-dunder", "%y = aten.__class__.__init__(%x)\n", "3:6", "unknown operator"),
    Hostile("op-torch-ops-dict", "%y = torch.ops.aten.__dict__(%x)\n", "3:6", "unknown operator"),
    Hostile("op-file-writer", f'%y = aten.save.default(1, "{MARKER}")\n', "3:6", "unknown operator 'aten.save.default'"),
    Hostile("op-printer", f'%y = aten._print.default("{MARKER}")\n', "3:6", "unknown operator 'aten._print.default'"),
    # Well formed, but refused when the analysis evaluates it.
    Hostile("dim-negative-at-default-size", "input %n : f32[(s0 - 5)]\n", "3:7", "dimension (s0 - 5) is -3 at s0=2"),
    Hostile("dim-division-by-zero-at-default-size", "input %n : f32[(s0//(s0 - 2))]\n", "3:7", "divides by zero at s0=2"),
    Hostile("tensor-beyond-2-62-bytes", "input %n : f32[4611686018427387904, 2]\n", "3:7", "bytes at these sizes (at most 2**62)"),
    Hostile("python-power-tower", "%y = aten.mul.Scalar(%x, operator.pow(9, operator.pow(9, 9)))\n", None, "operator.pow failed"),
    Hostile(
        "python-string-repetition", f'%y = aten.mul.Scalar(%x, operator.mul("{MARKER}", 4611686018427387904))\n', None, "takes numbers"
    ),
    Hostile("python-division-by-zero", "%y = aten.mul.Scalar(%x, operator.floordiv(1, 0))\n", None, "operator.floordiv failed"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.name)
def test_cli_refuses_hostile_text_in_one_line_and_runs_nothing(
    case: Hostile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "h.bwsk"
    source.write_text(HEADER + case.text + "output %x : f32[2]\n")
    assert main([str(source), "--emit", "json", "-o", "out.json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and len(captured.err) < 1200, captured.err[:2000]
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    if case.location is not None:
        assert captured.err.startswith(f"{source}:{case.location}: "), captured.err
    assert case.fragment in captured.err, captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.bwsk"]  # no marker, no output, no temporary file


@pytest.mark.sweep
def test_a_fresh_process_refuses_a_payload_without_running_it(tmp_path: Path) -> None:
    source = tmp_path / "payload.bwsk"
    source.write_text(HEADER + f"input %n : f32[({TOUCH})]\n" + "output %x : f32[2]\n")
    result = subprocess.run(
        [sys.executable, "-m", "bwsk.cli.compile", str(source), "--emit", "json", "-o", "out.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{source}:3:27: unexpected '(' (expected '%', ')', '*', '+', '-', '//')\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.bwsk"]


@pytest.mark.slow
def test_a_50_megabyte_token_is_shown_by_its_start_and_length(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "long.bwsk"
    source.write_text(HEADER + "%y = " + "Q" * 50_000_000 + "\n")
    assert main([str(source), "--emit", "json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{source}:3:6: unknown combinator 'QQQQQQQQQQ") and "(50000000 characters)" in err
    assert err.count("\n") == 1 and len(err) < 300


def test_control_characters_in_a_file_name_and_a_token_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "evil\x1b[2J\nname.bwsk"
    source.write_text(HEADER + "%y = \x1b]0;title\x07\n")
    assert main([str(source), "--emit", "ir"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\x07" not in err
    assert "evil\\x1b[2J\\nname.bwsk:3:6: unexpected character '\\x1b'" in err


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ('program "' + "a" * 10_000_000 + '"\n', "plain"),
        ('program "' + "\\u00e9" * 1_666_666 + '"\n', "escapes"),
        ('program "p"' + "\n" * 10_000_000, "newlines"),
    ],
    ids=["string", "escaped-string", "blank-lines"],
)
def test_a_10_megabyte_literal_costs_memory_proportional_to_its_length(body: str, what: str) -> None:
    parse('program "warm-up"\n')
    tracemalloc.start()
    try:
        program = parse(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert program.name.startswith(("a", "é", "p"))
    assert peak < 5 * len(body), f"{what}: peak {peak} bytes for {len(body)} characters"


def test_the_limits_leave_room_for_deep_but_legal_programs() -> None:
    """At the bracket-nesting and spine-length limits a program still reads, verifies, prints and runs."""
    depth = MAX_NESTING
    deep_term = nested("aten.neg.default(", "%x", ")", depth)
    long_spine = "I " * MAX_NESTING + "%x"
    deep_dim = "(s0" + " + 1" * MAX_DEPTH + ")"
    deep_list = nested("[", "2", "]", MAX_NESTING - 1)
    text = HEADER + f"input %n : f32[{deep_dim}]\n%y = {deep_term}\n%z = {long_spine}\noutput %y : f32[2], %z : f32[2]\n"
    program = parse(text)
    assert parse(print_program(program)) == program
    listed = parse(HEADER + f"%w = aten.view.default(%x, {deep_list})\n")
    assert parse(print_program(listed)) == listed
    x = torch.randn(2)
    y, z = program(x, torch.zeros(0))
    torch.testing.assert_close(y, x if depth % 2 == 0 else -x)
    assert z is x
    with pytest.raises(ParseError, match="nested deeper than 256"):
        parse(HEADER + f"%y = {nested('aten.neg.default(', '%x', ')', depth + 1)}\n")
    with pytest.raises(ParseError, match="more than 256 arguments"):
        parse(HEADER + f"%z = I {long_spine}\n")


def cpu_peak_bytes(run) -> tuple[object, int]:
    """`run()`'s result and the most bytes of CPU tensors alive while it ran (MemTracker)."""
    tracker = MemTracker()
    with tracker:
        result = run()
    peak = tracker.get_tracker_snapshot("peak")
    return result, peak.get(torch.device("cpu"), {}).get("Total", 0)


GIGABYTES_OF_ONES = {  # 1.6 GB of f32 if a constructor allocated on the CPU
    "no-device": "aten.ones.default([20000, 20000])",
    "device-named-by-a-string": 'aten.full.default([20000, 20000], 1.0, device="cpu")',
}


@pytest.mark.parametrize("term", GIGABYTES_OF_ONES.values(), ids=GIGABYTES_OF_ONES.keys())
def test_the_analysis_evaluates_constructors_on_the_meta_device(term: str, tmp_path: Path) -> None:
    source = tmp_path / "ones.bwsk"
    source.write_text(HEADER + f"%y : f32[2] = aten.add.Tensor(%x, aten.sum.default({term}))\noutput %y : f32[2]\n")
    code, peak = cpu_peak_bytes(lambda: main([str(source), "--emit", "json", "-o", str(tmp_path / "out.json")]))
    assert code == 0 and (tmp_path / "out.json").exists()
    assert peak < 2**20, f"{peak:,} bytes of CPU tensors"


CPU_RUNS_OVER_BUDGET = {  # --check-classification runs the program on the CPU: 8 GB of tensors each
    "declared-input": "input %n : f32[65536, 32768]\n%y : f32[2] = aten.add.Tensor(%x, aten.sum.default(%n))\n",
    "constructor": "%y : f32[2] = aten.add.Tensor(%x, aten.sum.default(aten.ones.default([65536, 32768])))\n",
}


@pytest.mark.parametrize("text", CPU_RUNS_OVER_BUDGET.values(), ids=CPU_RUNS_OVER_BUDGET.keys())
def test_a_cpu_check_over_the_byte_budget_is_refused_before_it_allocates(text: str, tmp_path: Path, capsys) -> None:
    source = tmp_path / "big.bwsk"
    source.write_text(HEADER + text + "output %y : f32[2]\n")
    code, peak = cpu_peak_bytes(lambda: main([str(source), "--check-classification"]))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--check-classification would run it on the CPU with 8,589,934,6" in err and "(at most 2**32)" in err
    assert peak < 2**20, f"{peak:,} bytes of CPU tensors"


BROADCASTS = {  # 1024 elements in, 2**26 out: a Jacobian of 2**34 entries were it checked
    "expand": "aten.expand.default(%x, [65536, 1024])",
    "repeat": "aten.repeat.default(%x, [65536, 1])",
}


@pytest.mark.parametrize("term", BROADCASTS.values(), ids=BROADCASTS.keys())
def test_a_verdict_whose_jacobian_would_be_huge_is_skipped(term: str) -> None:
    """A small operand with a huge output is within the byte budget, but its Jacobian is not computed."""
    program = parse(f'program "p"\ninput %x : f32[1, 1024]\n%y : f32[65536, 1024] = {term}\noutput %y : f32[65536, 1024]\n')
    [(_, _, _, evidence, outcome)] = check_verdicts(trace(program))
    assert (evidence, outcome) == ("the output has 67,108,864 elements", "skipped")
