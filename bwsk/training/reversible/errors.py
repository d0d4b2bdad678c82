"""The one error a reversible conversion raises: what cannot be made reversible, and why, in one line."""

from __future__ import annotations

from bwsk.errors import BwskError


class ConversionError(BwskError):
    """A model, layer or sub-block that cannot be converted into reversible coupling blocks."""
