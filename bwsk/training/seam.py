"""The seam of a coupling block: where a half's output meets a stream.

Forward adds a half's output into a stream (y = x + f); the rebuild subtracts
it again (x = y - f) and the result feeds the next half, which starts with its
normalisation. Every stream update goes through one `Seam` object so that a
fused kernel (add or subtract in fp32, then normalise, in one pass over memory)
can replace the torch arithmetic without touching the autograd logic.

Invariant: streams are fp32 whatever precision the half ran in; `add` and
`subtract` return fp32 tensors of the stream's shape.
"""

from __future__ import annotations

import torch

from bwsk.training.errors import ConversionError

KERNELS = ("torch", "auto", "triton")


class TorchSeam:
    """The seam in plain torch arithmetic (type promotion keeps the fp32 stream's precision)."""

    name = "torch"

    def add(self, stream: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return stream + branch

    def subtract(self, stream: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return stream - branch


def seam_for(kernels: str) -> TorchSeam:
    """The seam implementation for `kernels` ("torch"; "auto" picks torch until fused kernels exist)."""
    if kernels not in KERNELS:
        raise ConversionError(f"kernels must be one of {', '.join(KERNELS)}, not {kernels!r}")
    if kernels == "triton":
        raise ConversionError("kernels='triton': the fused seam kernels are not implemented yet; use kernels='torch'")
    return TorchSeam()
