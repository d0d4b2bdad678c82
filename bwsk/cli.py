"""`bwsk-compile`: read a program, verify it, and emit it.

Every user error is one line on stderr and exit code 2; no traceback unless
BWSK_DEBUG=1. Outputs are written atomically and never replace an existing file
without --force.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError, SourceError
from bwsk.parser import decode, parse
from bwsk.printer import print_program
from bwsk.program import Program

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3

DESCRIPTION = """\
Compile a program into bwsk's combinator IR and emit it.

INPUT is a .bwsk text file (or - for standard input). The program is parsed,
verified (names, scopes, operators, arities, declared types) and printed in
canonical form, so `--emit ir` doubles as a formatter.
"""

EPILOG = """\
examples:
  bwsk-compile grammar/examples/residual.bwsk --emit ir
  bwsk-compile model.bwsk --emit ir -o model.bwsk --force   # format in place

errors are reported as FILE:LINE:COL: message, with exit code 2.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bwsk-compile",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="a .bwsk IR file, or - for standard input")
    parser.add_argument("--emit", choices=["ir"], default="ir", help="what to write (default: ir, the canonical IR text)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of standard output (atomically)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it already exists")
    return parser


def read_program(spec: str) -> Program:
    """Parse and verify the program named by `spec` (a path or - for stdin)."""
    if spec == "-":
        return parse(decode(sys.stdin.buffer.read(), "<stdin>"), "<stdin>")
    if not os.path.exists(spec):
        raise SourceError(f"{spec}: no such file")
    if os.path.isdir(spec):
        raise SourceError(f"{spec}: is a directory (expected a .bwsk file)")
    with open(spec, "rb") as handle:
        data = handle.read()
    return parse(decode(data, spec), spec)


def emit(text: str, output: str | None, force: bool) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(output, text, force=force)


def run(args: argparse.Namespace) -> int:
    program = read_program(args.input)
    emit(print_program(program), args.output, args.force)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BwskError as error:
        print(error.render(), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("bwsk-compile: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug in bwsk: still one line unless debugging
        if os.environ.get("BWSK_DEBUG"):
            traceback.print_exc()
        else:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            print(f"bwsk-compile: internal error: {type(error).__name__}: {first} (set BWSK_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
