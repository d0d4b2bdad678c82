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


class TritonSeam:
    """The seam as bwsk's generated Triton kernel (`bwsk.kernels.runtime`): one pass over memory, fp32 arithmetic."""

    name = "triton"

    def add(self, stream: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        from bwsk.kernels.runtime import seam_forward

        return seam_forward(stream, branch, norm="none", kernels="triton")[0]

    def subtract(self, stream: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        from bwsk.kernels.runtime import seam_rebuild

        return seam_rebuild(stream, branch, norm="none", kernels="triton")[0]


def seam_for(kernels: str, device: torch.device | str = "cpu") -> TorchSeam | TritonSeam:
    """The seam for `kernels`: "torch", "triton", or "auto" (Triton on CUDA, torch elsewhere)."""
    if kernels not in KERNELS:
        raise ConversionError(f"kernels must be one of {', '.join(KERNELS)}, not {kernels!r}")
    if kernels == "auto":
        kernels = "triton" if torch.device(device).type == "cuda" else "torch"
    return TritonSeam() if kernels == "triton" else TorchSeam()
