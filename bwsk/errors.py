"""User-facing errors: each one renders as a single line, optionally located in a file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A 1-based line and column inside a named file (or "<string>")."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class BwskError(Exception):
    """An error the CLI reports as one line (`FILE:LINE:COL: message`) and exit code 2.

    Invariant: `message` holds no newline, so the rendered form is exactly one line.
    """

    def __init__(self, message: str, location: Location | None = None, hint: str | None = None):
        message = " ".join(message.split())
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = " ".join(hint.split()) if hint else None

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


class LoweringError(BwskError):
    """A torch.export program cannot be lowered (e.g. an operator the evaluator cannot run)."""
