"""A coupling block y1 = x1 + F(x2), y2 = x2 + G(y1) over existing sub-modules.

F and G are `Half`s: a chain of a layer's own sub-modules (e.g. a norm, then
attention, then a dropout) applied in order to one stream, each receiving the
side inputs (attention mask, rotary cos/sin, position ids) its layer passed it.
The block owns no parameters: it refers to the model's modules, so the model's
state dict, optimizer and devices are unchanged by a conversion.

When a half's first step is a norm a seam can compute (`Half.lead`, only for a
seam that fuses norms), the seam that produces the half's input also returns its
norm, and the half starts at its second step: a half is called with its input
*as the seam gave it* (`n`: the normalised stream, or the stream itself).

Invariants: streams keep the stack's stream dtype (float64 by default); a half
receives its input cast to the model's compute dtype and its output is added in
the stream dtype through the block's seam; the rebuild subtracts through the same
seam, so it recovers x exactly with float64 streams (up to rounding with fp32 ones).

`StackSeeds`: replayable randomness for the halves of a reversible stack.

Backward runs each half F or G a second time (to rebuild its inputs and take its
gradients), and dropout inside it must draw the same mask again. Storing each
block's generator state would cost memory per block (the CPU generator's state
is 5 KB), so randomness is counter-based instead: one base seed is drawn from
the default CPU generator per stack call (the global stream advances
deterministically; nothing is ever seeded from entropy), and half `h` of block
`i` runs with the generators of its device seeded from (base, i, h). Outside
that scope the global generators are restored, so the halves consume none of
the caller's random stream. Forward, rebuild, plain autograd and checkpointed
recompute all use the same seeds, hence the same masks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import unset_fake_temporarily

from bwsk.training.reversible.errors import ConversionError
from bwsk.training.reversible.seams import SeamNorm, TorchSeam, TritonSeam, seam_norm_of

RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Step:
    """One sub-module call of a half: its module path and the side-input names its layer passed it as keywords.

    With `dropout` set, the step is a dropout the layer applies in its own code (`path` is the layer):
    `F.dropout(h, dropout, training=layer.training)`.
    """

    path: str
    keywords: tuple[str, ...] = ()
    dropout: float | None = None


def stateful_submodule(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The first submodule that updates running statistics in forward (batch norm and the like), else None."""
    for name, sub in module.named_modules():
        tracks = isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats
        if tracks or any(buffer.startswith("running_") or buffer in RUNNING_STATISTICS for buffer, _ in sub.named_buffers(recurse=False)):
            return name, sub
    return None


class Half:
    """F or G: `steps` applied in order; a step's tuple output contributes its first element.

    `lead` is the first step's norm when `fuse_norm` asked for it and a seam can compute it
    (see `bwsk.training.reversible.seams`); the half is then called with that norm's output.
    """

    def __init__(self, root: nn.Module, steps: Sequence[Step], *, fuse_norm: bool = False):
        self.steps = tuple(steps)
        self.modules = tuple(root.get_submodule(step.path) for step in self.steps)
        for step, module in zip(self.steps, self.modules):
            found = stateful_submodule(module) if step.dropout is None else None
            if found is not None:
                name, sub = found
                where = f"{step.path}.{name}" if name else step.path
                raise ConversionError(
                    f"cannot make {step.path} reversible: {where} ({type(sub).__name__}) updates running statistics in forward, "
                    "and the rebuild in backward would update them a second time"
                )
        self.lead: SeamNorm | None = None
        self.fuse(fuse_norm)

    def __call__(self, start: torch.Tensor, side: Mapping[str, Any], dtype: torch.dtype) -> torch.Tensor:
        """The half on `start`: its input stream, or that stream's `lead` norm when `lead` is set."""
        hidden = start.to(dtype)
        first = 0 if self.lead is None else 1
        for step, module in zip(self.steps[first:], self.modules[first:]):
            if step.dropout is not None:
                hidden = nn.functional.dropout(hidden, step.dropout, module.training)
                continue
            out = module(hidden, **{name: side[name] for name in step.keywords if name in side})
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def fuse(self, enabled: bool) -> None:
        """Let the seam compute the leading norm (when it can: see `seam_norm_of`), or run it as its module again."""
        self.lead = seam_norm_of(self.modules[0]) if enabled and not self.steps[0].keywords else None

    def parameters(self) -> list[nn.Parameter]:
        """Unique parameters of the steps' modules, in step order."""
        modules = [module for step, module in zip(self.steps, self.modules) if step.dropout is None]
        return list({id(p): p for module in modules for p in module.parameters()}.values())


class CouplingBlock:
    """Block `index` of a stack: y1 = x1 + F(x2), y2 = x2 + G(y1) (the Function in `reversible` inverts it)."""

    def __init__(self, index: int, layer: str, f: Half, g: Half, seam: TorchSeam | TritonSeam):
        self.index, self.layer, self.f, self.g, self.seam = index, layer, f, g, seam

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        n2: torch.Tensor,
        side: Mapping[str, Any],
        dtype: torch.dtype,
        seeds: StackSeeds | None,
        after: SeamNorm | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y1, y2, n) from x1, x2 and F's input `n2`; n is `after` (the next half's norm) of y2, or y2 itself."""
        with self.scope(seeds, 0):
            y1, n1 = self.seam.add(x1, self.f(n2, side, dtype), self.g.lead)
        with self.scope(seeds, 1):
            y2, n = self.seam.add(x2, self.g(n1, side, dtype), after)
        return y1, y2, n

    def scope(self, seeds: StackSeeds | None, half: int):
        """The RNG scope half `half` (0 = F, 1 = G) of this block runs in (none when seeds is None)."""
        return nullcontext() if seeds is None else seeds.half(self.index, half)

    def parameters(self) -> list[nn.Parameter]:
        """Unique parameters of F and G, F's first."""
        return list({id(p): p for p in (*self.f.parameters(), *self.g.parameters())}.values())


def run_blocks(
    blocks: Sequence[CouplingBlock],
    x1: torch.Tensor,
    x2: torch.Tensor,
    sides: Sequence[Mapping[str, Any]],
    dtype: torch.dtype,
    seeds: StackSeeds | None,
    before_block: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The blocks in order on the stream pair (block `index` reads `sides[index]`); each y2 seam also normalises for the next block's F.

    `before_block(index, x1, x2)` sees every block's input pair (the drift probe keeps them).
    """
    n2 = blocks[0].seam.normalised(x2, blocks[0].f.lead) if blocks else x2
    for i, block in enumerate(blocks):
        if before_block is not None:
            before_block(block.index, x1, x2)
        after = blocks[i + 1].f.lead if i + 1 < len(blocks) else None
        x1, x2, n2 = block.forward(x1, x2, n2, sides[block.index], dtype, seeds, after)
    return x1, x2


_SEED_RANGE = 2**62


@dataclass(frozen=True)
class StackSeeds:
    """The seeds of one stack call: `half(i, h)` is the scope in which half h (0 = F, 1 = G) of block i runs."""

    base: int
    device: torch.device

    @classmethod
    def draw(cls, device: torch.device) -> StackSeeds:
        """A fresh base seed from the default CPU generator (advances it by one draw), a real draw under a FakeTensorMode too."""
        with unset_fake_temporarily():
            return cls(int(torch.randint(_SEED_RANGE, (), dtype=torch.int64)), device)

    def seed(self, block: int, half: int) -> int:
        return (self.base + 2 * block + half) % _SEED_RANGE

    def half(self, block: int, half: int):
        return seeded(self.seed(block, half), self.device)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with the CPU generator (and the CUDA generator of `device`) seeded to `seed`; restore both after."""
    cpu_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        torch.random.default_generator.manual_seed(seed)
        if cuda_state is not None:
            torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()].manual_seed(seed)
        yield
    finally:
        torch.random.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
