"""The eager torch path of every seam pattern: the reference the Triton kernels are tested against.

Same contract as the kernels (kernels/runtime.py): the stream result has the promoted
dtype of its operands, the statistics are computed in fp32, and n has the stream's
dtype. Autograd differentiates these functions directly.
"""

from __future__ import annotations

import torch

from bwsk.kernels.patterns import SeamPattern


def reference_norm(pattern: SeamPattern, value: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """`pattern.norm` of `value` over its last dimension, statistics in fp32 (or wider), result in `value`'s dtype."""
    if pattern.norm == "none":
        return value
    wide = value.to(torch.promote_types(value.dtype, torch.float32))
    if pattern.norm == "layernorm":
        centred = wide - wide.mean(-1, keepdim=True)
        normed = centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + pattern.eps)
    else:
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + pattern.eps)
    if weight is not None:
        normed = normed * weight.to(wide.dtype)
    if bias is not None:
        normed = normed + bias.to(wide.dtype)
    return normed.to(value.dtype)


def seam_forward(
    pattern: SeamPattern, x: torch.Tensor, f: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`y = x + f; n = norm(y)`."""
    y = x + f
    return y, reference_norm(pattern, y, weight, bias)


def seam_rebuild(
    pattern: SeamPattern, y: torch.Tensor, f: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`x = y - f; n = norm(x)`: the inverse of `seam_forward`'s stream update, with the consumer's norm recomputed."""
    x = y - f
    return x, reference_norm(pattern, x, weight, bias)
