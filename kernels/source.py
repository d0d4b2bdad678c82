"""Text from the input (model, program and module names) made safe to write into generated Python source.

Every emitter writes input-derived text only through these two functions: `identifier`
for names that become code, `mention` for names in comments and docstrings. Invariant:
what `mention` returns is printable ASCII with no newline, no double quote and no
backslash outside an escape, so it can neither end a comment or a triple-quoted
docstring nor start a statement; `ast.literal_eval` of a quoted mention is the text.
"""

from __future__ import annotations

import keyword
import re

PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # model ids, module paths: written as they are


def identifier(name: str) -> str:
    """`name` itself when it is an ASCII Python identifier and not a keyword; else ValueError."""
    if not (name.isascii() and name.isidentifier()) or keyword.iskeyword(name):
        raise ValueError(f"{name!r} is not a Python identifier; generated code names only identifiers")
    return name


def mention(text: str) -> str:
    """`text` for a comment or docstring: itself when it is a plain name, else a single-quoted string literal.

    The literal escapes backslashes, control and non-ASCII characters (`unicode_escape`), the
    single quote (`\\'`) and the double quote (`\\x22`).
    """
    if PLAIN_NAME.fullmatch(text):
        return text
    escaped = text.encode("unicode_escape").decode("ascii").replace("'", "\\'").replace('"', "\\x22")
    return f"'{escaped}'"
