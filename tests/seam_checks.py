"""Comparing a seam implementation with the torch reference, forward and every gradient.

Rule (as in flash-attention's tests): against the exact (fp64) reference, the kernel's error
is at most twice torch's own error at the same precision, plus a few ulps of the result's scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bwsk.kernels import reference
from bwsk.kernels.patterns import SeamPattern

Seam = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def operands(
    pattern: SeamPattern, shape: tuple[int, ...], stream: torch.dtype, branch: torch.dtype, seed: int, device: str = "cpu"
) -> list:
    """x (or y), f, weight, bias (None where the pattern has none), leaves requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    d = shape[-1]

    def leaf(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return values.to(device=device, dtype=dtype).requires_grad_()

    x = leaf(torch.randn(shape, generator=generator) * 2 + 0.5, stream)
    f = leaf(torch.randn(shape, generator=generator), branch)
    weight = leaf(1 + 0.3 * torch.randn(d, generator=generator), branch) if pattern.weight else None
    bias = leaf(0.2 * torch.randn(d, generator=generator), branch) if pattern.bias else None
    return [x, f, weight, bias]


def outputs_and_gradients(seam: Seam, inputs: list, upstream: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    """The seam's two outputs, then the gradient of every present input for the given output gradients."""
    out, normed = seam(*inputs)
    present = [t for t in inputs if t is not None]
    if out is normed:  # no normalisation: n is the stream itself
        grads = torch.autograd.grad(out, present, upstream[0] + upstream[1])
    else:
        grads = torch.autograd.grad((out, normed), present, upstream)
    return [out.detach(), normed.detach(), *grads]


def widened(inputs: list) -> list:
    return [t.detach().double().requires_grad_() if t is not None else None for t in inputs]


def check_against_reference(pattern: SeamPattern, direction: str, seam: Seam, inputs: list, seed: int = 0) -> None:
    """Assert `seam` (x, f, weight, bias -> out, normed) matches the reference of `pattern` in `direction`."""
    run = reference.seam_forward if direction == "forward" else reference.seam_rebuild
    torch_seam = lambda *args: run(pattern, *args)  # noqa: E731
    generator = torch.Generator().manual_seed(seed + 1)
    out_dtype = torch.promote_types(inputs[0].dtype, inputs[1].dtype)
    upstream = tuple(torch.randn(inputs[0].shape, generator=generator).to(inputs[0].device, out_dtype) for _ in range(2))
    got = outputs_and_gradients(seam, inputs, upstream)
    lowp = outputs_and_gradients(torch_seam, inputs, upstream)
    exact = outputs_and_gradients(torch_seam, widened(inputs), tuple(u.double() for u in upstream))
    labels = ["out", "normed", "grad x", "grad f", "grad weight", "grad bias"]
    labels = labels[:4] + [label for label, t in zip(labels[4:], inputs[2:]) if t is not None]
    for label, mine, theirs, truth in zip(labels, got, lowp, exact):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, (
            f"{label}: {mine.dtype}{tuple(mine.shape)} vs {theirs.dtype}{tuple(theirs.shape)}"
        )
        ulps = 4 * torch.finfo(mine.dtype).eps * max(1.0, truth.abs().max().item())
        error, torch_error = (mine.double() - truth).abs().max().item(), (theirs.double() - truth).abs().max().item()
        assert error <= 2 * torch_error + ulps, f"{label}: error {error:.3g} vs torch's own {torch_error:.3g} (+{ulps:.3g})"
