"""Running `bwsk-train` in this process for the tests: the exit code and what it printed, and its one-line errors."""

from __future__ import annotations

import re

from bwsk.cli import train as cli


def run(argv, capsys) -> tuple[int, str, str]:
    """`bwsk-train ARGV` in this process: exit code, stdout, stderr."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse errors leave through sys.exit
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


PROGRESS = re.compile(r"(training step \d+/\d+ |step \d+: valid loss )")  # what a run prints without a terminal


def one_line_error(argv, capsys, code: int = 2) -> str:
    """The stderr of a run that exits with `code` printing exactly one line, no traceback, and no internal error
    unless `code` is 3 (the internal-error code)."""
    got, out, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if not PROGRESS.match(line)]  # a run's progress lines come before its end
    assert got == code and len(lines) == 1 and "Traceback" not in err, err
    assert (code == 3) == ("internal error" in err), err
    return lines[0] + "\n"
