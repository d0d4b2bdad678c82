"""The repeated blocks of a network: the unit that checkpointing, selective recompute and coupling work on."""

from __future__ import annotations

from torch import nn

from bwsk.errors import BwskError


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of blocks: the `nn.ModuleList` holding the most parameters, with its module path.

    Invariant: every element of the list has the same class (a stack of identical blocks,
    e.g. `gpt_neox.layers`, `transformer.h`, `model.layers`).
    """
    found: list[tuple[int, str, nn.ModuleList]] = []
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            found.append((sum(p.numel() for p in module.parameters()), path, module))
    if not found:
        raise BwskError(f"{type(model).__name__}: no stack of identical blocks (an nn.ModuleList) to apply a training mode to")
    _, path, blocks = max(found, key=lambda entry: entry[0])
    return path, blocks


def block_paths(model: nn.Module) -> list[str]:
    """Module paths of the blocks, in order (`gpt_neox.layers.0`, ...)."""
    path, blocks = block_list(model)
    return [f"{path}.{index}" if path else str(index) for index in range(len(blocks))]
