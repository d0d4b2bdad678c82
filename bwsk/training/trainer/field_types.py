"""Dataclass fields read back from JSON (run.json, state.json): each value checked against its field's annotation.

JSON gives any type anywhere; a run folder someone edited must fail in one line, not deep in the loop.
The annotations checked are the scalar ones (`int`, `float`, `str`, `bool`, each optionally `| None`);
a bool is not a number, an int is a float, NaN and infinities are not. Other annotations (lists, dicts, tuples) are the caller's to check.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from bwsk.errors import BwskError

WORDS = {"int": "a whole number", "float": "a finite number", "str": "text", "bool": "true or false"}


def require_field_types(cls: type, values: Mapping[str, Any], name_of: Callable[[str], str]) -> None:
    """Raise BwskError (naming the field as `name_of(field)`) for the first value in `values` of the wrong type for `cls`."""
    for field in dataclasses.fields(cls):
        if field.name in values and not has_type(values[field.name], str(field.type)):
            kind = str(field.type).removesuffix(" | None")
            raise BwskError(f"{name_of(field.name)} must be {WORDS[kind]}, not {values[field.name]!r}")


def has_type(value: Any, annotation: str) -> bool:
    """Whether `value` fits the scalar `annotation` (True for annotations this module does not check)."""
    kind = annotation.removesuffix(" | None")
    if kind not in WORDS:
        return True
    if value is None:
        return kind != annotation
    if kind == "float":
        return is_number(value)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, int if kind == "int" else str) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    """A whole number >= 0 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_number(value: Any) -> bool:
    """An int or a finite float (not a bool: JSON's NaN and Infinity are no numbers of a run)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
