"""A coupling block y1 = x1 + F(x2), y2 = x2 + G(y1) over existing sub-modules.

F and G are `Half`s: a chain of a layer's own sub-modules (e.g. a norm, then
attention, then a dropout) applied in order to one stream, each receiving the
side inputs (attention mask, rotary cos/sin, position ids) its layer passed it.
The block owns no parameters: it refers to the model's modules, so the model's
state dict, optimizer and devices are unchanged by a conversion.

Invariants: streams are fp32; a half receives its stream cast to the model's
compute dtype and its output is added in fp32 through the block's seam; the
rebuild subtracts through the same seam, so it recovers x up to fp32 rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bwsk.training.errors import ConversionError
from bwsk.training.rng import StackSeeds
from bwsk.training.seam import TorchSeam

RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Step:
    """One sub-module call of a half: its module path and the side-input names its layer passed it as keywords."""

    path: str
    keywords: tuple[str, ...] = ()


def stateful_submodule(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The first submodule that updates running statistics in forward (batch norm and the like), else None."""
    for name, sub in module.named_modules():
        tracks = isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats
        if tracks or any(buffer.startswith("running_") or buffer in RUNNING_STATISTICS for buffer, _ in sub.named_buffers(recurse=False)):
            return name, sub
    return None


class Half:
    """F or G: `steps` applied in order; a step's tuple output contributes its first element."""

    def __init__(self, root: nn.Module, steps: Sequence[Step]):
        self.steps = tuple(steps)
        self.modules = tuple(root.get_submodule(step.path) for step in self.steps)
        for step, module in zip(self.steps, self.modules):
            found = stateful_submodule(module)
            if found is not None:
                name, sub = found
                where = f"{step.path}.{name}" if name else step.path
                raise ConversionError(
                    f"cannot make {step.path} reversible: {where} ({type(sub).__name__}) updates running statistics in forward, "
                    "and the rebuild in backward would update them a second time"
                )

    def __call__(self, stream: torch.Tensor, side: Mapping[str, Any], dtype: torch.dtype) -> torch.Tensor:
        hidden = stream.to(dtype)
        for step, module in zip(self.steps, self.modules):
            out = module(hidden, **{name: side[name] for name in step.keywords if name in side})
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def parameters(self) -> list[nn.Parameter]:
        """Unique parameters of the steps' modules, in step order."""
        return list({id(p): p for module in self.modules for p in module.parameters()}.values())


class CouplingBlock:
    """Block `index` of a stack: y1 = x1 + F(x2), y2 = x2 + G(y1) (the Function in `reversible` inverts it)."""

    def __init__(self, index: int, layer: str, f: Half, g: Half, seam: TorchSeam):
        self.index, self.layer, self.f, self.g, self.seam = index, layer, f, g, seam

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, side: Mapping[str, Any], dtype: torch.dtype, seeds: StackSeeds | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self.scope(seeds, 0):
            y1 = self.seam.add(x1, self.f(x2, side, dtype))
        with self.scope(seeds, 1):
            y2 = self.seam.add(x2, self.g(y1, side, dtype))
        return y1, y2

    def scope(self, seeds: StackSeeds | None, half: int):
        """The RNG scope half `half` (0 = F, 1 = G) of this block runs in (none when seeds is None)."""
        return nullcontext() if seeds is None else seeds.half(self.index, half)

    def parameters(self) -> list[nn.Parameter]:
        """Unique parameters of F and G, F's first."""
        return list({id(p): p for p in (*self.f.parameters(), *self.g.parameters())}.values())
