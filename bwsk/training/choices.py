"""The names a training user chooses among, the defaults of two knobs, and the analyzed mode's memory budget:
importing this imports nothing heavy.

`bwsk-train --help`, `TrainConfig` and the runtime read them here, so a command line is checked before torch
loads. The modes are also the keys of the memory pass's prediction (`bwsk.passes.memory.result.MODES`; a test
keeps the two equal).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from bwsk.errors import BwskError, quoted
from bwsk.render.units import human_bytes

MODES = ("conventional", "checkpoint", "analyzed", "reversible")  # in measuring order: conventional is the reference
KERNELS = ("auto", "torch", "triton")  # the reversible seams' arithmetic: auto is Triton on CUDA, torch elsewhere
STRATEGIES = ("ddp", "fsdp")  # data-parallel wrappers under torchrun
PRECISIONS = ("bf16", "fp16", "fp32")  # autocast dtypes (fp32: no autocast)
DEFAULT_BUDGET = 0.5  # the analyzed mode's activation bytes: half of what conventional training keeps
DEFAULT_DRIFT_TOLERANCE = 1e-4  # relative rebuild error; measured: gradient error ~0.05-0.1x the largest rebuild error


def require_choice(value: str, allowed: Sequence[str], what: str, error: type[BwskError] = BwskError) -> None:
    """`value` is one of `allowed`; else `error` in one line naming `what` and the choices."""
    if value not in allowed:
        raise error(f"unknown {what} {value!r} (expected one of {', '.join(allowed)})")


Budget = int | float  # the analyzed mode's: bytes (int), or a fraction of conventional activation memory (float)
BYTE_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_BUDGET_TEXT = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[a-z]+)?", re.IGNORECASE)


def parse_budget(value: int | float | str, what: str = "memory budget") -> Budget:
    """The analyzed mode's budget `value` as bytes or a fraction (one-line BwskError naming `what` for anything else).

    Bytes: an int >= 1, or text with a binary unit ("6GiB", "512 MiB", "1.5GiB", "4096B"; rounded down to whole bytes).
    A fraction of conventional activation memory: a float, or a bare number as text ("0.3", "1"), above 0 and at most 1.
    """
    if isinstance(value, str):
        found = _BUDGET_TEXT.fullmatch(value.strip())
        if found is None:
            raise BwskError(
                f"{what} {quoted(value)} is neither bytes with a unit (6GiB, 512MiB) nor a fraction of conventional activation memory (0.5)"
            )
        unit = found["unit"]
        if unit is None:
            return parse_budget(float(found["number"]), what)
        if unit.lower() not in BYTE_UNITS:
            raise BwskError(f"{what} {quoted(value)}: unknown unit {quoted(unit)} (use B, KiB, MiB, GiB or TiB)")
        return parse_budget(int(float(found["number"]) * BYTE_UNITS[unit.lower()]), what)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BwskError(f"{what} must be bytes or a fraction of conventional activation memory, not {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise BwskError(f"{what} {value}: bytes must be at least 1")
        return value
    if not (math.isfinite(value) and 0 < value <= 1):
        raise BwskError(
            f"{what} {value}: a fraction of conventional activation memory must be above 0 and at most 1 (bytes take a unit: 6GiB, 512MiB)"
        )
    return value


def budget_label(budget: Budget) -> str:
    """A budget as a reader says it: "6 GiB", or "0.5 of conventional activation memory"."""
    return human_bytes(budget) if isinstance(budget, int) else f"{budget:g} of conventional activation memory"
