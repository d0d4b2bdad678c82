"""Training batches: a token stream cut into fixed-length blocks, shuffled per epoch from the seed alone.

Invariants: the order of epoch `e` depends only on (`seed`, `e`), so a run resumed at
(epoch, batch) sees exactly the batches an uninterrupted run would; every rank of a
`world_size`-way data-parallel run gets the same number of batches per epoch and
disjoint blocks (rank r takes every world_size-th block of the shuffled order); the
tail of the stream shorter than a block, and the blocks that do not fill a last
batch on every rank, are left out of that epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from bwsk.errors import SourceError


@dataclass(frozen=True)
class BlockSampler:
    """Batches of `batch_size` blocks of `seq_len` tokens from `tokens`, for rank `rank` of `world_size`."""

    tokens: torch.Tensor
    seq_len: int
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..{self.world_size - 1}")
        if self.batches_per_epoch < 1:
            raise SourceError(
                f"the train split has {self.tokens.numel():,} tokens: fewer than one batch of {self.batch_size} x {self.seq_len} "
                f"on each of {self.world_size} rank(s) (lower --batch-size or --seq-len)"
            )

    @property
    def blocks(self) -> int:
        return self.tokens.numel() // self.seq_len

    @property
    def batches_per_epoch(self) -> int:
        return self.blocks // (self.batch_size * self.world_size)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's block indices for `epoch`, shape (batches_per_epoch, batch_size)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        shuffled = torch.randperm(self.blocks, generator=generator)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        return shuffled[:used][self.rank :: self.world_size].view(self.batches_per_epoch, self.batch_size)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """The batches of `epoch` from batch index `start` on, each (batch_size, seq_len) int64 on the cpu."""
        blocks = self.tokens[: self.blocks * self.seq_len].view(self.blocks, self.seq_len)
        for indices in self.order(epoch)[start:]:
            yield blocks[indices]
