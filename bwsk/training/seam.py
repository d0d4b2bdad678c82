"""The seam of a coupling block: where a half's output meets a stream, and the norm the next half starts with.

Forward adds a half's output into a stream (y = x + f); the rebuild subtracts it
again (x = y - f). When the half that reads the result starts with a recognised
norm (`SeamNorm`), the seam also returns that norm of the result, so a fused kernel
does the stream update and the normalisation in one pass over memory; in backward,
`norm_backward` adds the norm's input gradient to the stream gradient (one more
pass) and returns the norm's weight and bias gradients. Every stream update goes
through one seam object, so the autograd logic does not change with the arithmetic.

Invariants: the stream keeps its dtype (float64 by default, see `bwsk.training.stack`)
whatever precision the half ran in, and the update is computed in it (at least fp32), so
with float64 streams `subtract` inverts `add` exactly; `add` and `subtract` return
(stream of the input's shape, n), n being the stream itself when there is no norm;
`normalised(x, norm)` is the n that `add` or `subtract` gives for the stream value x, by
the same arithmetic (a segment's first half starts from it, forward and rebuild alike).
"""

from __future__ import annotations

import torch

from bwsk.training.errors import ConversionError
from bwsk.training.seam_norm import SeamNorm, normalise, normalised

KERNELS = ("auto", "torch", "triton")

NormGradients = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class TorchSeam:
    """The seam in eager torch (type promotion keeps the fp32 stream's precision; one `layer_norm` / `rms_norm` call per norm)."""

    name = "torch"
    fuses_norms = False  # `make_reversible(kernels="torch")` leaves every norm to its module: the eager baseline

    def add(self, stream: torch.Tensor, branch: torch.Tensor, norm: SeamNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y = stream + branch
        return y, normalised(y, norm)

    def normalised(self, stream: torch.Tensor, norm: SeamNorm | None) -> torch.Tensor:
        return normalised(stream, norm)

    def subtract(self, stream: torch.Tensor, branch: torch.Tensor, norm: SeamNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = stream - branch
        return x, normalised(x, norm)

    def norm_backward(
        self, value: torch.Tensor, grad_stream: torch.Tensor, grad_normed: torch.Tensor, norm: SeamNorm | None
    ) -> NormGradients:
        """(grad_stream + norm'(value)^T grad_normed, weight gradient, bias gradient); a plain sum without a norm."""
        if norm is None:
            return grad_stream + grad_normed, None, None
        leaf = value.detach().requires_grad_(True)
        weight, bias = (t.detach().requires_grad_(True) if t is not None else None for t in (norm.weight, norm.bias))
        with torch.enable_grad():
            out = normalise(norm.pattern, leaf, weight, bias)
        grads = iter(torch.autograd.grad(out, [t for t in (leaf, weight, bias) if t is not None], grad_normed.to(out.dtype)))
        grad_value = next(grads)
        grad_weight = next(grads) if weight is not None else None
        grad_bias = next(grads) if bias is not None else None
        return grad_stream + grad_value, grad_weight, grad_bias


class TritonSeam:
    """The seam as bwsk's generated Triton kernels (`bwsk.kernels.runtime`): one pass over memory, the stream's arithmetic."""

    name = "triton"
    fuses_norms = True

    def add(self, stream: torch.Tensor, branch: torch.Tensor, norm: SeamNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from bwsk.kernels.runtime import seam_forward

        return seam_forward(stream, branch, *_norm_arguments(norm), kernels="triton")

    def subtract(self, stream: torch.Tensor, branch: torch.Tensor, norm: SeamNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from bwsk.kernels.runtime import seam_rebuild

        return seam_rebuild(stream, branch, *_norm_arguments(norm), kernels="triton")

    def normalised(self, stream: torch.Tensor, norm: SeamNorm | None) -> torch.Tensor:
        """The rebuild kernel's n of `stream` minus zero (bitwise the n a seam kernel gives for that stream value)."""
        return stream if norm is None else self.subtract(stream, torch.zeros_like(stream), norm)[1]

    def norm_backward(
        self, value: torch.Tensor, grad_stream: torch.Tensor, grad_normed: torch.Tensor, norm: SeamNorm | None
    ) -> NormGradients:
        """As `TorchSeam.norm_backward`, in one fused kernel (no branch gradient written)."""
        if norm is None:
            return grad_stream + grad_normed, None, None
        from bwsk.kernels.runtime import kernels_for, launch_backward

        grad, _, grad_weight, grad_bias = launch_backward(
            kernels_for(norm.pattern), value, grad_stream, grad_normed, norm.weight, norm.bias, grad_stream.dtype, grad_stream.dtype, 0
        )
        return grad, grad_weight, grad_bias


def _norm_arguments(norm: SeamNorm | None) -> tuple:
    """(weight, bias, eps, norm kind) for `seam_forward` / `seam_rebuild`."""
    if norm is None:
        return None, None, 0.0, "none"
    return norm.weight, norm.bias, norm.pattern.eps, norm.pattern.norm


def require_known_kernels(kernels: str) -> None:
    """Refuse a `kernels` value that names no seam arithmetic (one line, the choices)."""
    if kernels not in KERNELS:
        raise ConversionError(f"unknown kernels {kernels!r} (expected one of {', '.join(KERNELS)})")


def seam_for(kernels: str, device: torch.device | str = "cpu") -> TorchSeam | TritonSeam:
    """The seam for `kernels`: "torch", "triton", or "auto" (Triton on CUDA, torch elsewhere)."""
    require_known_kernels(kernels)
    if kernels == "auto":
        kernels = "triton" if torch.device(device).type == "cuda" else "torch"
    return TritonSeam() if kernels == "triton" else TorchSeam()
