"""A toy reversible stack (norm -> linear -> gelu -> dropout halves, scaled by a side input) for runtime tests."""

from __future__ import annotations

import torch
from torch import nn

from bwsk.training.coupling import CouplingBlock, Half, Step
from bwsk.training.seam import TorchSeam
from bwsk.training.stack import ReversibleStack


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


def toy_stack(blocks: int = 4, width: int = 16, *, dropout: float = 0.3, gain: float = 1.0, norm: bool = True, **options):
    """(module holding the halves' parameters, ReversibleStack over them)."""
    torch.manual_seed(0)
    root = nn.ModuleDict({f"{h}{i}": ToyHalf(width, dropout, gain, norm) for i in range(blocks) for h in "fg"})
    seam = TorchSeam()
    coupling = [
        CouplingBlock(i, f"block{i}", Half(root, [Step(f"f{i}", ("scale",))]), Half(root, [Step(f"g{i}", ("scale",))]), seam)
        for i in range(blocks)
    ]
    return root, ReversibleStack(coupling, **options)
