"""Command-line parsing whose errors are one escaped line, a pointer to --help and exit code 2."""

from __future__ import annotations

import argparse
from typing import NoReturn

from bwsk.errors import one_line

EXIT_USER_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line prints `PROG: error: MESSAGE (see PROG --help)` instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: a decimal integer from 1 to below 10**18 (a longer literal is refused unconverted)."""
    digits = text.strip()
    if not (digits.isdecimal() and digits.isascii() and len(digits) <= 18 and int(digits) >= 1):
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to below 10**18, got {text!r}")
    return int(digits)
