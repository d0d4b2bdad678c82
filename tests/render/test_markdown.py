"""Sections of generated documents: replacing one leaves every other byte alone."""

from __future__ import annotations

from bwsk.render.markdown import replace_section, section, section_body, sections

DOCUMENT = (
    "# Title\n\nprose by hand\n\n"
    + section("first", "| a |\n|---|", "one.py")
    + "\n\nbetween\n\n"
    + section("first-more", "other table", "two.py")
    + "\n\ntail\n"
)


def test_replacing_a_section_keeps_everything_else():
    updated = replace_section(DOCUMENT, "first", "new body\nsecond line", "one.py")
    assert section_body(updated, "first") == "new body\nsecond line"
    assert section_body(updated, "first-more") == "other table"  # a name that extends another is a different section
    before, after = DOCUMENT.split(section("first", "| a |\n|---|", "one.py"))
    assert updated.startswith(before) and updated.endswith(after)


def test_a_missing_section_is_appended_and_found_again():
    updated = replace_section(DOCUMENT, "third", "\nbody\n", "three.py")
    assert updated.startswith(DOCUMENT.rstrip("\n"))
    assert section_body(updated, "third") == "body"
    assert [s.splitlines()[0] for s in sections(updated)] == [
        "<!-- first: written by one.py -->",
        "<!-- first-more: written by two.py -->",
        "<!-- third: written by three.py -->",
    ]
    assert replace_section(updated, "third", "body", "three.py") == updated


def test_an_empty_document_gets_just_the_section():
    assert replace_section("", "only", "x", "w.py") == section("only", "x", "w.py") + "\n"
    assert section_body("no markers here", "only") is None
