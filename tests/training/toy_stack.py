"""A toy reversible stack (norm -> linear -> gelu -> dropout halves, scaled by a side input) for runtime tests."""

from __future__ import annotations

import torch
from torch import nn

from bwsk.training.reversible.coupling import CouplingBlock, Half, Step
from bwsk.training.reversible.seams import TorchSeam, TritonSeam
from bwsk.training.reversible.stack import ReversibleStack


class ToyHalf(nn.Module):
    def __init__(self, width: int, dropout: float, gain: float, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.linear = nn.Linear(width, width)
        with torch.no_grad():
            self.linear.weight.mul_(gain)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        out = self.dropout(torch.nn.functional.gelu(self.linear(self.norm(x))))
        return out if scale is None else out * scale


def toy_stack(
    blocks: int = 4,
    width: int = 16,
    *,
    dropout: float = 0.3,
    gain: float = 1.0,
    norm: bool = True,
    seam: TorchSeam | TritonSeam | None = None,
    fuse_norm: bool = False,
    **options,
):
    """(module holding the halves' parameters, ReversibleStack over them).

    With `fuse_norm` each half's LayerNorm is its own first step (`{h}{i}_norm`, the way a transformer layer
    calls it) and the seam computes it; the function is the same as without.
    """
    torch.manual_seed(0)
    root = nn.ModuleDict({f"{h}{i}": ToyHalf(width, dropout, gain, norm) for i in range(blocks) for h in "fg"})
    if fuse_norm:
        for name, half in list(root.items()):
            root[f"{name}_norm"], half.norm = half.norm, nn.Identity()

    def half(name: str) -> Half:
        steps = [Step(f"{name}_norm"), Step(name, ("scale",))] if fuse_norm else [Step(name, ("scale",))]
        return Half(root, steps, fuse_norm=fuse_norm)

    seam = seam or TorchSeam()
    coupling = [CouplingBlock(i, f"block{i}", half(f"f{i}"), half(f"g{i}"), seam) for i in range(blocks)]
    return root, ReversibleStack(coupling, **options)


WIDTH = 16


def inputs(seed: int = 0, requires_grad: bool = True, device: str = "cpu"):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, WIDTH, generator=generator).to(device).requires_grad_(requires_grad)
    scale = (1 + 0.1 * torch.randn(WIDTH, generator=generator)).to(device).requires_grad_(requires_grad)
    weight = torch.randn(2, 5, WIDTH, generator=generator).to(device)
    return x, scale, weight


def run(root, stack, *, plain: bool, requires_grad: bool = True, autocast: bool = False, seed: int = 3, device: str = "cpu"):
    """(output, gradients of every parameter and of the tensor inputs) of one forward/backward."""
    root.zero_grad(set_to_none=True)
    x, scale, weight = inputs(requires_grad=requires_grad, device=device)
    stack.plain = plain
    torch.manual_seed(seed)
    with torch.autocast(device, torch.bfloat16, enabled=autocast):
        out = stack(x, {"scale": scale})
    (out.float() * weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in root.named_parameters()}
    if requires_grad:
        grads |= {"x": x.grad, "scale": scale.grad}
    return out.detach(), grads


def assert_close(got: dict, want: dict, rtol: float) -> None:
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        assert got[name] is not None, name
        assert float((got[name] - w).norm() / w.norm().clamp_min(1e-12)) <= rtol, name
