"""The names a training user chooses among, and the defaults of two knobs: importing this imports nothing heavy.

`bwsk-train --help`, `TrainConfig` and the runtime read them here, so a command line is checked before torch
loads. The modes are also the keys of the memory pass's prediction (`bwsk.passes.memory.result.MODES`; a test
keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Sequence

from bwsk.errors import BwskError

MODES = ("conventional", "checkpoint", "analyzed", "reversible")  # in measuring order: conventional is the reference
KERNELS = ("auto", "torch", "triton")  # the reversible seams' arithmetic: auto is Triton on CUDA, torch elsewhere
STRATEGIES = ("ddp", "fsdp")  # data-parallel wrappers under torchrun
PRECISIONS = ("bf16", "fp16", "fp32")  # autocast dtypes (fp32: no autocast)
DEFAULT_BUDGET = 0.5  # the analyzed mode's share of the recomputable bytes it keeps
DEFAULT_DRIFT_TOLERANCE = 1e-4  # relative rebuild error; measured: gradient error ~0.05-0.1x the largest rebuild error


def require_choice(value: str, allowed: Sequence[str], what: str, error: type[BwskError] = BwskError) -> None:
    """`value` is one of `allowed`; else `error` in one line naming `what` and the choices."""
    if value not in allowed:
        raise error(f"unknown {what} {value!r} (expected one of {', '.join(allowed)})")
