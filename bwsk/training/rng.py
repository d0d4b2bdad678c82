"""Replayable randomness for the halves of a reversible stack.

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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_SEED_RANGE = 2**62


@dataclass(frozen=True)
class StackSeeds:
    """The seeds of one stack call: `half(i, h)` is the scope in which half h (0 = F, 1 = G) of block i runs."""

    base: int
    device: torch.device

    @classmethod
    def draw(cls, device: torch.device) -> StackSeeds:
        """A fresh base seed from the default CPU generator (advances it by one draw)."""
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
