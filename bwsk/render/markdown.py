"""Sections of a generated Markdown document, each owned by the script that writes it.

A section is the text between `<!-- NAME: written by WRITER -->` and `<!-- end NAME -->`.
Invariant: replacing one section leaves every byte outside it unchanged, so several
scripts can write into one document without erasing each other's tables.
"""

from __future__ import annotations

import re

_SECTION = re.compile(r"<!-- (?P<name>[\w.-]+): written by [^>\n]*? -->\n.*?\n<!-- end (?P=name) -->", re.S)


def section(name: str, body: str, writer: str) -> str:
    """`body` between the markers of section `name`, naming the script that writes it."""
    inner = body.strip("\n")
    return f"<!-- {name}: written by {writer} -->\n{inner}\n<!-- end {name} -->"


def sections(text: str) -> list[str]:
    """Every marked section of `text`, markers included, in document order."""
    return [match.group(0) for match in _SECTION.finditer(text)]


def replace_section(text: str, name: str, body: str, writer: str) -> str:
    """`text` with section `name` replaced by `body` (appended at the end when `text` has no such section)."""
    block = section(name, body, writer)
    for match in _SECTION.finditer(text):
        if match.group("name") == name:
            return text[: match.start()] + block + text[match.end() :]
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"


def section_body(text: str, name: str) -> str | None:
    """The text between the markers of section `name`, or None when `text` has no such section."""
    for match in _SECTION.finditer(text):
        if match.group("name") == name:
            return match.group(0).split("\n", 1)[1].rsplit("\n", 1)[0]
    return None


def heading_section(text: str | None, heading: str) -> str | None:
    """The part of `text` from the line `heading` (a level-2 heading) to the next level-2 heading or the end; None without it."""
    start = (text or "").find(heading)
    if start < 0:
        return None
    after = text.find("\n## ", start + len(heading))
    return text[start : after + 1 if after >= 0 else len(text)]


def replace_heading_section(text: str | None, heading: str, new_section: str, title: str) -> str:
    """`text` with the section under `heading` replaced by `new_section` (appended when absent; a new document headed
    `title` when `text` is empty); every byte outside that section is kept."""
    if not text:
        return f"{title}\n\n{new_section}"
    old = heading_section(text, heading)
    if old is None:
        return text.rstrip("\n") + "\n\n" + new_section
    start = text.find(heading)
    rest = text[start + len(old) :]
    return text[:start] + new_section + ("\n" + rest if rest else "")
