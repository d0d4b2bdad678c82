"""Running the seam kernels: launchers, one autograd.Function, and the seam API the reversible runtime calls.

Layering (as in Liger-Kernel): generated kernel -> launcher (shapes, dtypes, grid) ->
`SeamFunction` (autograd) -> `seam_forward` / `seam_rebuild` (choose Triton or the torch
reference). Contract, shared with kernels/reference.py: tensors of any contiguous layout
are viewed as rows x d over their last dimension; the stream result has the promoted dtype
of its operands and n has the stream result's dtype; the stream update and the stream
gradient are computed in float64 for float64 streams (exact for fp32/bf16 branches), in fp32
otherwise; norm statistics are fp32.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import triton
import triton.language as tl

from bwsk.kernels import cache, codegen
from bwsk.kernels.patterns import KernelPlan, SeamPattern

BRANCH_SIGN = {"forward": 1, "rebuild": -1}
MAX_WIDTH = 16384  # one row lives in registers; wider rows would need a column loop
INTERPRETER_PROGRAMS = 4  # backward programs under TRITON_INTERPRET (one runs at a time)


@dataclass(frozen=True)
class SeamKernels:
    """The compiled kernel family of one pattern (`backward` is None for a seam without normalisation)."""

    pattern: SeamPattern
    forward: Any
    rebuild: Any
    backward: Any | None


def kernels_in(module: ModuleType, pattern: SeamPattern) -> SeamKernels:
    """The family of `pattern` in a generated module (for example one written by `bwsk-compile --emit triton`)."""
    name = pattern.name
    backward = getattr(module, f"{name}_backward") if pattern.norm != "none" else None
    return SeamKernels(pattern, getattr(module, f"{name}_forward"), getattr(module, f"{name}_rebuild"), backward)


@functools.cache
def kernels_for(pattern: SeamPattern) -> SeamKernels:
    """The family of `pattern`, generated and imported through the cache on first use."""
    return kernels_in(cache.load(codegen.emit_module([KernelPlan(pattern, ())])), pattern)


def _launch_settings(width: int) -> tuple[int, int]:
    """Block size (the row width rounded up to a power of two) and warps per program."""
    if width > MAX_WIDTH:
        raise ValueError(f"seam kernels handle rows up to {MAX_WIDTH} wide, got {width}")
    block = triton.next_power_of_2(width)
    warps = 16 if block >= 8192 else 8 if block >= 2048 else 4
    return block, warps


def _check_operands(
    pattern: SeamPattern, src: torch.Tensor, branch: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> None:
    if src.shape != branch.shape:
        raise ValueError(f"seam operands differ in shape: {tuple(src.shape)} and {tuple(branch.shape)}")
    if src.dim() == 0:
        raise ValueError("seam operands need at least one dimension")
    for name, tensor, wanted in (("weight", weight, pattern.weight), ("bias", bias, pattern.bias)):
        if (tensor is not None) != wanted:
            raise ValueError(f"pattern {pattern.name} {'needs' if wanted else 'has no'} {name}")
        if tensor is not None and tuple(tensor.shape) != (src.shape[-1],):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected ({src.shape[-1]},)")
    for tensor in (src, branch, weight, bias):
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise ValueError(f"seam tensors must be floating point, got {tensor.dtype}")
        if tensor.device != src.device:
            raise ValueError(f"seam tensors are on different devices: {src.device} and {tensor.device}")
    if not runs_on(src.device):
        raise ValueError(
            "Triton seam kernels need CUDA tensors (or TRITON_INTERPRET=1 for the CPU interpreter); run the eager reference (kernels='torch')"
        )


def runs_on(device: torch.device | str) -> bool:
    """Whether the seam kernels can run on `device`: CUDA, or any device's tensors under TRITON_INTERPRET=1 (the CPU interpreter)."""
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def wide(dtype: torch.dtype) -> tl.dtype:
    """The arithmetic of a stream stored in `dtype`: float64 for float64, else fp32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(-1, tensor.shape[-1])


def launch_seam(
    kernels: SeamKernels,
    direction: str,
    src: torch.Tensor,
    branch: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`out = src +/- branch` (forward / rebuild) and `normed = norm(out)` (None without normalisation).

    `out`: the tensor to write (may be `src` itself: each program loads its row before it stores it); it must be
    contiguous, of `src`'s shape and of the promoted dtype.
    """
    pattern = kernels.pattern
    _check_operands(pattern, src, branch, weight, bias)
    width = src.shape[-1]
    src_rows, branch_rows = _rows(src), _rows(branch)
    dtype = torch.promote_types(src.dtype, branch.dtype)
    if out is None:
        out = torch.empty(src_rows.shape, dtype=dtype, device=src.device)
    elif not (out.is_contiguous() and out.shape == src.shape and out.dtype == dtype):
        raise ValueError(f"launch_seam: out must be a contiguous {dtype} tensor of shape {tuple(src.shape)}")
    out = out.view(src_rows.shape)
    normed = torch.empty_like(out) if pattern.norm != "none" else None
    if out.numel():
        block, warps = _launch_settings(width)
        affine = [t.contiguous() for t in (weight, bias) if t is not None]
        outputs = [out] + ([normed] if normed is not None else [])
        kernel = kernels.forward if direction == "forward" else kernels.rebuild
        kernel[(out.shape[0],)](src_rows, branch_rows, *affine, *outputs, width, WIDE=wide(out.dtype), BLOCK=block, num_warps=warps)
    return out.view(src.shape), (normed.view(src.shape) if normed is not None else None)


def _backward_programs(rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        return min(rows, 2 * torch.cuda.get_device_properties(device).multi_processor_count)
    return min(rows, INTERPRETER_PROGRAMS)


def launch_backward(
    kernels: SeamKernels,
    value: torch.Tensor,
    grad_out: torch.Tensor,
    grad_normed: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    src_dtype: torch.dtype,
    branch_dtype: torch.dtype,
    branch_sign: int,
    *,
    grad_src: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of a seam with respect to src, branch, weight and bias, given those of out and normed.

    `value` is the stream the norm read (the seam's `out`). grad_src = grad_out + norm'(value)^T grad_normed;
    grad_branch = branch_sign * grad_src, always its own tensor (one buffer returned for two leaves would alias their .grad),
    or None when branch_sign is 0 (the kernel then writes no branch gradient: a norm backward alone). `grad_src`: the
    tensor to write it into (may be `grad_out` itself: each row is loaded before it is stored; contiguous, `src_dtype`).
    """
    pattern = kernels.pattern
    width = value.shape[-1]
    value_rows = _rows(value)
    rows = value_rows.shape[0]
    if grad_src is None:
        grad_src = torch.empty(value_rows.shape, dtype=src_dtype, device=value.device)
    elif not (grad_src.is_contiguous() and grad_src.shape == value.shape and grad_src.dtype == src_dtype):
        raise ValueError(f"launch_backward: grad_src must be a contiguous {src_dtype} tensor of shape {tuple(value.shape)}")
    grad_src = grad_src.view(value_rows.shape)
    grad_branch = torch.empty(value_rows.shape, dtype=branch_dtype, device=value.device) if branch_sign else None
    programs = max(_backward_programs(rows, value.device), 1)
    partial = {
        name: torch.empty((programs, width), dtype=torch.float32, device=value.device)
        for name, present in (("weight", pattern.weight), ("bias", pattern.bias))
        if present
    }
    if rows:
        block, warps = _launch_settings(width)
        per_program = triton.cdiv(rows, programs)
        affine = [weight.contiguous()] if weight is not None else []
        kernels.backward[(programs,)](
            value_rows, _rows(grad_out), _rows(grad_normed), *affine, grad_src, grad_src if grad_branch is None else grad_branch,
            *partial.values(), rows, width, per_program,
            BRANCH_SIGN=branch_sign, WIDE=wide(src_dtype), BLOCK=block, num_warps=warps,
        )  # fmt: skip
    else:
        for buffer in partial.values():
            buffer.zero_()
    grad_weight = partial["weight"].sum(0).to(weight.dtype) if weight is not None else None
    grad_bias = partial["bias"].sum(0).to(bias.dtype) if bias is not None else None
    return grad_src.view(value.shape), None if grad_branch is None else grad_branch.view(value.shape), grad_weight, grad_bias


class SeamFunction(torch.autograd.Function):
    """(src, branch, weight, bias) -> (out, normed): one seam, forward (`+`) or rebuild (`-`), differentiable in all four."""

    @staticmethod
    def forward(ctx, kernels: SeamKernels, direction: str, src, branch, weight, bias):
        out, normed = launch_seam(kernels, direction, src, branch, weight, bias)
        ctx.kernels, ctx.branch_sign = kernels, BRANCH_SIGN[direction]
        ctx.src_dtype, ctx.branch_dtype = src.dtype, branch.dtype
        ctx.save_for_backward(out, weight, bias)
        return (out, normed) if normed is not None else out

    @staticmethod
    def backward(ctx, grad_out, grad_normed=None):
        out, weight, bias = ctx.saved_tensors
        if ctx.kernels.backward is None:
            grad_src = grad_out.to(ctx.src_dtype)
            return None, None, grad_src, (ctx.branch_sign * grad_out).to(ctx.branch_dtype), None, None
        grads = launch_backward(ctx.kernels, out, grad_out, grad_normed, weight, bias, ctx.src_dtype, ctx.branch_dtype, ctx.branch_sign)
        return (None, None, *grads)


def pattern_of(weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, norm: str) -> SeamPattern:
    return SeamPattern("add", norm, weight is not None, bias is not None, float(eps) if norm != "none" else 0.0)


def _seam(direction: str, src, branch, weight, bias, eps: float, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    pattern = pattern_of(weight, bias, eps, norm)
    result = SeamFunction.apply(kernels_for(pattern), direction, src, branch, weight, bias)
    return result if pattern.norm != "none" else (result, result)


def seam_forward(
    x: torch.Tensor, f: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
    eps: float = 1e-5, norm: str = "layernorm",
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`y = x + f; n = norm(y) * weight + bias` in one fused Triton kernel, differentiable in x, f, weight and bias;
    n is y when norm is "none". The eager equivalent is `reference.seam_forward` (which seams run is the caller's choice:
    `bwsk.training.reversible.seams.seam_for`)."""
    return _seam("forward", x, f, weight, bias, eps, norm)


def seam_rebuild(
    y: torch.Tensor, f: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
    eps: float = 1e-5, norm: str = "layernorm",
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`x = y - f; n = norm(x) * weight + bias` (the inverse stream update plus the recompute's norm); as `seam_forward`."""
    return _seam("rebuild", y, f, weight, bias, eps, norm)
