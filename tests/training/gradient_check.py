"""Reversible gradients against plain autograd on the same converted model: one step's loss and every gradient."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from bwsk.training.reversible.convert import plain_autograd

FP32_RTOL = 1e-5
BF16_RTOL = 1e-3  # both under CPU bf16 autocast; measured 1e-7 (the rebuilt fp32 stream can flip a bf16 rounding)


def batch(seed: int = 0, size: tuple[int, int] = (2, 12)) -> torch.Tensor:
    """Token ids below the tiny models' vocabulary (128), drawn from `seed`."""
    return torch.randint(0, 128, size, generator=torch.Generator().manual_seed(seed))


def gradients(model, batches, *, plain: bool, seed: int = 1, autocast: bool = False) -> tuple[float, dict[str, torch.Tensor]]:
    """(last loss, gradient of every trainable parameter) after forward+backward on each of `batches` (accumulating)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    for ids in batches:
        with plain_autograd(model) if plain else nullcontext(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            loss = model(ids, labels=ids).loss
        loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def assert_same_gradients(model, got: dict, want: dict, rtol: float) -> None:
    """Every trainable parameter has a gradient on both sides, each within `rtol` (relative norm) of `want`'s."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(got) == sorted(want) == sorted(trainable), "every trainable parameter gets a gradient"
    for name in trainable:
        scale = want[name].norm().clamp_min(1e-12)
        assert float((got[name] - want[name]).norm() / scale) <= rtol, name
