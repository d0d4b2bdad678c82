"""User-facing errors: each one renders as a single line, optionally located in a file."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A 1-based line and column inside a named file (or "<string>")."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{one_line(self.file)}:{self.line}:{self.column}"


MAX_MESSAGE = 1000  # characters of a message before its middle is cut (saying how much)
MAX_RUN = 200  # characters of one space-free run (a path, a token, an argument) before its middle is cut
_LONG_RUN = re.compile(rf"\S{{{MAX_RUN + 1},}}")


def printable(text: str) -> str:
    """`text` with each non-printable character (newline, escape code, ...) written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def quoted(text: str, limit: int = 40) -> str:
    """`text` quoted and escaped for a message; beyond `limit` characters, its start and its length."""
    text = str(text)  # a str subclass such as a lexer token quotes as its text
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def one_line(text: str) -> str:
    """`text` as one short line: runs over MAX_RUN and the whole over MAX_MESSAGE characters cut, then escaped.

    A newline becomes `\\n` rather than a space, so a file name that holds one stays recognisable.
    """
    text = _LONG_RUN.sub(lambda run: shortened(run.group(), MAX_RUN), text.strip())
    return printable(shortened(text, MAX_MESSAGE))


def shortened(text: str, limit: int) -> str:
    """`text`, or its start and end (3:1) around a note of how many characters were left out.

    The result is at most `limit` characters long when `limit` is at least 100 (the note takes up to 50).
    """
    if len(text) <= limit:
        return text
    kept = max(limit - 50, limit // 2)
    end = kept // 4
    return f"{text[: kept - end]}...({len(text) - kept:,} characters left out)...{text[len(text) - end :]}"


class BwskError(Exception):
    """An error the CLI reports as one line (`FILE:LINE:COL: message`) and exit code 2.

    Invariant: `message` and `hint` hold only printable characters (newlines and escape codes
    are escaped) and are at most about MAX_MESSAGE long, so the rendered form is one short line.
    """

    def __init__(self, message: str, location: Location | None = None, hint: str | None = None):
        message = one_line(message)
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = one_line(hint) if hint else None

    def render(self) -> str:
        text = self.message if self.hint is None else f"{self.message} ({self.hint})"
        return text if self.location is None else f"{self.location}: {text}"

    def __str__(self) -> str:
        return self.render()


class ParseError(BwskError):
    """The IR text is not well formed."""


class VerifyError(BwskError):
    """A program is well formed but violates an IR invariant."""


class SourceError(BwskError):
    """An input file or model name cannot be read (missing, corrupt, refused)."""


class DimensionError(BwskError):
    """A tensor dimension is not a size: negative, beyond 2**62, divided by zero, or nested too deep."""


class LoweringError(BwskError):
    """A torch.export program cannot be lowered (e.g. an operator the evaluator cannot run)."""


def first_line(error: BaseException) -> str:
    """`TypeName: first line of the message`, for reporting a library's exception in one line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
