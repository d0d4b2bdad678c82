"""`TensorInfo`: an operand's static type (shape and dtype, values unknown), as the dataflow records it and the rules judge it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorInfo:
    """An operand's static type: its shape and dtype, values unknown."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)
