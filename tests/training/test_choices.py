"""The analyzed mode's budget as users write it: bytes with a binary unit or a fraction of conventional activation
memory; anything else is refused in one line."""

from __future__ import annotations

import pytest

from bwsk.errors import BwskError
from bwsk.training.choices import budget_label, parse_budget


@pytest.mark.parametrize(
    "given,parsed",
    [
        ("6GiB", 6 * 2**30),
        ("512MiB", 512 * 2**20),
        ("1.5 GiB", 3 * 2**29),
        ("64kib", 64 * 1024),
        ("4096B", 4096),
        ("0.3", 0.3),
        (".25", 0.25),
        ("1", 1.0),
        (1024, 1024),
        (0.5, 0.5),
        (1.0, 1.0),
    ],
)
def test_bytes_and_fractions_are_accepted(given, parsed):
    value = parse_budget(given)
    assert value == parsed and type(value) is type(parsed)  # an int is bytes, a float a fraction


@pytest.mark.parametrize(
    "given,message",
    [
        ("", "neither bytes with a unit"),
        ("lots", "neither bytes with a unit"),
        ("-1GiB", "neither bytes with a unit"),
        ("1e9", "neither bytes with a unit"),
        ("nan", "neither bytes with a unit"),
        ("6GB", "unknown unit 'GB'"),
        ("2", "must be above 0 and at most 1"),
        ("0", "must be above 0 and at most 1"),
        (1.5, "must be above 0 and at most 1"),
        (float("inf"), "must be above 0 and at most 1"),
        (0, "bytes must be at least 1"),
        ("0.1B", "bytes must be at least 1"),
        (True, "must be bytes or a fraction"),
        (None, "must be bytes or a fraction"),
    ],
)
def test_anything_else_is_refused_in_one_line(given, message):
    with pytest.raises(BwskError, match=message) as refused:
        parse_budget(given, "--budget")
    assert str(refused.value).startswith("--budget") and "\n" not in str(refused.value)


def test_a_budget_reads_as_bytes_or_as_a_fraction():
    assert budget_label(parse_budget("6GiB")) == "6 GiB"
    assert budget_label(parse_budget("0.3")) == "0.3 of conventional activation memory"
