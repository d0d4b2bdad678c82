"""The text of static arguments; `literal_text` and `NAMED_LITERALS` are inverse on every value."""

from __future__ import annotations

import json
import math

import torch

from bwsk.ir.terms import LitValue
from bwsk.ir.types import DTYPE_NAMES, DTYPES_BY_NAME

MAX_INT_DIGITS = 4300  # longest integer literal read (Python's own default limit on str <-> int)

_ENUMS: dict[str, LitValue] = {
    "strided": torch.strided,
    "sparse_coo": torch.sparse_coo,
    "contiguous_format": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
    "preserve_format": torch.preserve_format,
}

NAMED_LITERALS: dict[str, LitValue] = {
    "true": True,
    "false": False,
    "none": None,
    "inf": math.inf,
    "nan": math.nan,
    **DTYPES_BY_NAME,
    **_ENUMS,
}
_ENUM_NAMES = {str(value): name for name, value in _ENUMS.items()}


def literal_text(value: LitValue) -> str:
    """The canonical text of a static value (floats by `repr`, which round-trips exactly)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, torch.dtype):
        return DTYPE_NAMES[value]
    if isinstance(value, torch.device):
        return f'device("{value}")'
    return _ENUM_NAMES[str(value)]
