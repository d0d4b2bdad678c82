"""The seam of a coupling block: where a half's output meets a stream, and the norm the next half starts with.

Forward adds a half's output into a stream (y = x + f); the rebuild subtracts it
again (x = y - f). When the half that reads the result starts with a recognised
norm (`SeamNorm`), the seam also returns that norm of the result, so a fused kernel
does the stream update and the normalisation in one pass over memory; in backward,
`norm_backward` adds the norm's input gradient to the stream gradient (one more
pass) and returns the norm's weight and bias gradients. Every stream update goes
through one seam object, so the autograd logic does not change with the arithmetic.

`subtract` and `norm_backward` with `inplace=True` write their result into the stream (the gradient) they were given,
the same arithmetic in the same dtype: the rebuild uses it for streams and gradients only it holds, so a step keeps
one copy of each instead of two while the rebuild walks the blocks.

Invariants: the stream keeps its dtype (float64 by default, see `bwsk.training.reversible.stack`)
whatever precision the half ran in, and the update is computed in it (at least fp32), so
with float64 streams `subtract` inverts `add` exactly; `add` and `subtract` return
(stream of the input's shape, n), n being the stream itself when there is no norm;
`normalised(x, norm)` is the n that `add` or `subtract` gives for the stream value x, by
the same arithmetic (a segment's first half starts from it, forward and rebuild alike).

`SeamNorm`: the normalisation a half starts with, computed by the seam instead of by the half's module.

A pre-norm half begins with LayerNorm or RMSNorm of its stream. A fused seam writes that
norm in the same pass over memory as the stream update (forward: y = x + f, n = norm(y);
rebuild: x = y - f, n = norm(x)), and its backward kernel adds the norm's input gradient
to the stream gradient; the half then starts from n at its second step.

The module is recognised by what it computes, not by its class name: a copy of it, on
random parameters and a random input with a non-zero mean, must equal
`bwsk.kernels.reference.reference_norm` for one pattern (LayerNorm and RMSNorm differ by O(1)
there, so the match decides the kind). Gemma's `(1 + weight)` scaling, an unknown eps, a
buffer, a child module or a registered hook makes it fail, and the half keeps running its
own module.

Invariant: for a `SeamNorm`, `module(x)` equals `eager_norm(pattern, x, weight, bias)` in fp32.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from bwsk.kernels import reference
from bwsk.kernels.patterns import SeamPattern
from bwsk.training.choices import KERNELS, require_choice
from bwsk.training.reversible.errors import ConversionError

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

    def subtract(
        self, stream: torch.Tensor, branch: torch.Tensor, norm: SeamNorm | None = None, *, inplace: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = stream.sub_(branch) if inplace and _writable(stream, branch) else stream - branch
        return x, normalised(x, norm)

    def norm_backward(
        self, value: torch.Tensor, grad_stream: torch.Tensor, grad_normed: torch.Tensor, norm: SeamNorm | None, *, inplace: bool = False
    ) -> NormGradients:
        """(grad_stream + norm'(value)^T grad_normed, weight gradient, bias gradient); a plain sum without a norm."""
        if norm is None:
            return _added(grad_stream, grad_normed, inplace), None, None
        leaf = value.detach().requires_grad_(True)
        weight, bias = (t.detach().requires_grad_(True) if t is not None else None for t in (norm.weight, norm.bias))
        with torch.enable_grad():
            out = eager_norm(norm.pattern, leaf, weight, bias)
        grads = iter(torch.autograd.grad(out, [t for t in (leaf, weight, bias) if t is not None], grad_normed.to(out.dtype)))
        grad_value = next(grads)
        grad_weight = next(grads) if weight is not None else None
        grad_bias = next(grads) if bias is not None else None
        return _added(grad_stream, grad_value, inplace), grad_weight, grad_bias


def _writable(target: torch.Tensor, operand: torch.Tensor) -> bool:
    """Can `target op= operand` replace `target op operand`: same result dtype and shape, and a dense target?"""
    return (
        torch.result_type(target, operand) == target.dtype
        and torch.broadcast_shapes(target.shape, operand.shape) == target.shape
        and target.is_contiguous()
    )


def _added(grad_stream: torch.Tensor, grad: torch.Tensor, inplace: bool) -> torch.Tensor:
    """grad_stream + grad, written into grad_stream when `inplace` allows it (the same arithmetic either way)."""
    return grad_stream.add_(grad) if inplace and _writable(grad_stream, grad) else grad_stream + grad


class TritonSeam:
    """The seam as bwsk's generated Triton kernels (`bwsk.kernels.runtime`): one pass over memory, the stream's arithmetic."""

    name = "triton"
    fuses_norms = True

    def add(self, stream: torch.Tensor, branch: torch.Tensor, norm: SeamNorm | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from bwsk.kernels.runtime import seam_forward

        return seam_forward(stream, branch, *_norm_arguments(norm))

    def subtract(
        self, stream: torch.Tensor, branch: torch.Tensor, norm: SeamNorm | None = None, *, inplace: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from bwsk.kernels.runtime import kernels_for, launch_seam, pattern_of, seam_rebuild

        if inplace and _writable(stream, branch) and branch.shape == stream.shape:  # no graph: the kernel writes into the stream
            weight, bias, eps, kind = _norm_arguments(norm)
            out, normed = launch_seam(kernels_for(pattern_of(weight, bias, eps, kind)), "rebuild", stream, branch, weight, bias, out=stream)
            return out, (out if normed is None else normed)
        return seam_rebuild(stream, branch, *_norm_arguments(norm))

    def normalised(self, stream: torch.Tensor, norm: SeamNorm | None) -> torch.Tensor:
        """The rebuild kernel's n of `stream` minus zero (bitwise the n a seam kernel gives for that stream value)."""
        return stream if norm is None else self.subtract(stream, torch.zeros_like(stream), norm)[1]

    def norm_backward(
        self, value: torch.Tensor, grad_stream: torch.Tensor, grad_normed: torch.Tensor, norm: SeamNorm | None, *, inplace: bool = False
    ) -> NormGradients:
        """As `TorchSeam.norm_backward`, in one fused kernel (no branch gradient written)."""
        if norm is None:
            return _added(grad_stream, grad_normed, inplace), None, None
        from bwsk.kernels.runtime import kernels_for, launch_backward

        into = grad_stream if inplace and grad_stream.is_contiguous() else None
        grad, _, grad_weight, grad_bias = launch_backward(
            kernels_for(norm.pattern), value, grad_stream, grad_normed, norm.weight, norm.bias, grad_stream.dtype, grad_stream.dtype, 0,
            grad_src=into,
        )  # fmt: skip
        return grad, grad_weight, grad_bias


def _norm_arguments(norm: SeamNorm | None) -> tuple:
    """(weight, bias, eps, norm kind) for `seam_forward` / `seam_rebuild`."""
    if norm is None:
        return None, None, 0.0, "none"
    return norm.weight, norm.bias, norm.pattern.eps, norm.pattern.norm


def require_known_kernels(kernels: str) -> None:
    """Refuse a `kernels` value that names no seam arithmetic (one line, the choices)."""
    require_choice(kernels, KERNELS, "kernels", ConversionError)


def seam_for(kernels: str, device: torch.device | str = "cpu") -> TorchSeam | TritonSeam:
    """The seam for `kernels`: "torch", "triton", or "auto" (Triton on CUDA, torch elsewhere)."""
    require_known_kernels(kernels)
    if kernels == "auto":
        kernels = "triton" if torch.device(device).type == "cuda" else "torch"
    return TritonSeam() if kernels == "triton" else TorchSeam()


EPS_ATTRIBUTES = ("eps", "variance_epsilon", "epsilon")
PROBE_ROWS = 4
PROBE_RTOL, PROBE_ATOL = 1e-4, 1e-5  # fp32 against fp32: the two kinds differ by O(1) on the probe


@dataclass(frozen=True)
class SeamNorm:
    """A half's leading norm module and the seam pattern that computes it."""

    module: nn.Module
    pattern: SeamPattern

    @property
    def weight(self) -> torch.Tensor | None:
        return self.module.weight if self.pattern.weight else None

    @property
    def bias(self) -> torch.Tensor | None:
        return self.module.bias if self.pattern.bias else None


def seam_norm_of(module: nn.Module) -> SeamNorm | None:
    """The `SeamNorm` computing `module`, or None when a seam cannot stand in for it (see the module docstring)."""
    parameters = dict(module.named_parameters())
    if set(parameters) - {"weight", "bias"} or next(module.buffers(), None) is not None or next(module.children(), None) is not None:
        return None
    if module._forward_hooks or module._forward_pre_hooks:
        return None
    width = _width(module, parameters)
    eps = next((value for name in EPS_ATTRIBUTES if _is_eps(value := getattr(module, name, None))), None)
    if width is None or eps is None or any(p.device.type == "meta" for p in parameters.values()):
        return None
    probe, x = _probe(module, width)
    with torch.no_grad():
        try:
            out = probe(x)
        except Exception:  # a module that cannot take a (rows, width) input is not a norm over the last dimension
            return None
        for norm in ("layernorm", "rmsnorm"):
            pattern = SeamPattern("add", norm, "weight" in parameters, "bias" in parameters, float(eps))
            expected = reference.reference_norm(pattern, x, getattr(probe, "weight", None), getattr(probe, "bias", None))
            if isinstance(out, torch.Tensor) and out.shape == expected.shape and torch.allclose(out, expected, PROBE_RTOL, PROBE_ATOL):
                return SeamNorm(module, pattern)
    return None


def normalised(stream: torch.Tensor, norm: SeamNorm | None) -> torch.Tensor:
    """`norm` of `stream` (the stream itself when `norm` is None) where no seam precedes a half: a segment's first."""
    return stream if norm is None else eager_norm(norm.pattern, stream, norm.weight, norm.bias)


def eager_norm(pattern: SeamPattern, value: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """`pattern`'s norm of `value` in eager torch, differentiable in all three.

    One ATen call (`layer_norm` / `rms_norm`: one pass over memory on a GPU), in fp32 or wider as the seams
    compute, the result in `value`'s dtype; equal to `reference.reference_norm` up to summation order.
    """
    wide = value.to(torch.promote_types(value.dtype, torch.float32))
    weight, bias = (None if t is None else t.to(wide.dtype) for t in (weight, bias))
    shape = (value.shape[-1],)
    if pattern.norm == "layernorm":
        result = torch.nn.functional.layer_norm(wide, shape, weight, bias, pattern.eps)
    else:
        result = torch.nn.functional.rms_norm(wide, shape, weight, pattern.eps)
    return result.to(value.dtype)


def _width(module: nn.Module, parameters: dict[str, nn.Parameter]) -> int | None:
    shapes = {tuple(p.shape) for p in parameters.values()}
    if len(shapes) == 1 and len(next(iter(shapes))) == 1:
        return next(iter(shapes))[0]
    shape = getattr(module, "normalized_shape", None)
    if not parameters and isinstance(shape, tuple) and len(shape) == 1:
        return int(shape[0])
    return None


def _is_eps(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _probe(module: nn.Module, width: int) -> tuple[nn.Module, torch.Tensor]:
    """An fp32 copy of `module` with random parameters, and a random (rows, width) input with a non-zero mean."""
    generator = torch.Generator().manual_seed(0)
    device = next(module.parameters(), torch.empty(0)).device
    probe = copy.deepcopy(module).float()
    with torch.no_grad():
        for parameter in probe.parameters():
            parameter.copy_(torch.rand(parameter.shape, generator=generator) * 1.5 + 0.25)
    x = torch.randn(PROBE_ROWS, width, generator=generator) * 3.0 + 1.0
    return probe, x.to(device)
