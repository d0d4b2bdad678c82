"""What autograd saves for backward: measured on a real forward, or probed for one operator.

`measure(module, inputs)` runs the module's forward with grad enabled under
`torch.autograd.graph.saved_tensors_hooks` and counts the distinct storages
autograd saves, leaving out the module's parameters and buffers (weights are not
activations). `probe(run, operands)` runs one operator call and tells which of
its operands and outputs autograd saves, matched by storage (a saved view of an
operand is that operand), and the bytes of every other storage it saves (layer
norm's mean and rstd, a matmul's reshaped copy, a dropout mask). Probes run on
meta tensors: no data, no memory, the same autograd formulas as on a device.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Measured:
    """Bytes of the distinct non-weight storages a forward saved for backward, and their number."""

    bytes: int
    storages: int


def measure(module: torch.nn.Module, inputs: Sequence[Any]) -> Measured:
    """Run `module(*inputs)` with grad enabled and count what autograd saves (weights excluded).

    Storages are told apart by data pointer; all of them stay referenced until the
    count is done, so no pointer is reused. The module's mode (train/eval) is kept.
    """
    weights = {t.untyped_storage().data_ptr() for t in itertools.chain(module.parameters(), module.buffers())}
    saved: dict[int, torch.UntypedStorage] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.nbytes() and storage.data_ptr() not in weights:
            saved.setdefault(storage.data_ptr(), storage)
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = module(*inputs)
    del output
    return Measured(sum(s.nbytes() for s in saved.values()), len(saved))


@dataclass(frozen=True)
class Saves:
    """What one operator call saves for backward.

    `operands`: positions (into the operand list) whose storage is saved; `outputs`:
    positions (into the flattened outputs) whose storage is saved and that are not
    operand storages; `extra`: bytes of each other saved storage, one entry per storage.
    """

    operands: tuple[int, ...]
    outputs: tuple[int, ...]
    extra: tuple[int, ...]


def flat_outputs(result: Any) -> list[Any]:
    """A call's outputs as a list: the items of a tuple or list result, else the result itself."""
    return list(result) if isinstance(result, (tuple, list)) else [result]


def storage_key(tensor: torch.Tensor) -> int:
    """Identity of a tensor's storage (views share it); works on meta tensors, whose data pointers are all 0."""
    return tensor.untyped_storage()._cdata


def probe(run: Callable[[], Any], operands: Sequence[torch.Tensor]) -> tuple[Any, Saves]:
    """Call `run()` under saved-tensor hooks; return its result and what it saved.

    A saved storage is matched to the first operand that has it, else to the first
    output that has it, else counted as an extra buffer.
    """
    packed: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        packed.append(tensor)
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    by_operand: dict[int, int] = {}
    for position, tensor in enumerate(operands):
        by_operand.setdefault(storage_key(tensor), position)
    by_output: dict[int, int] = {}
    for position, item in enumerate(flat_outputs(result)):
        if isinstance(item, torch.Tensor):
            by_output.setdefault(storage_key(item), position)
    saved_operands: set[int] = set()
    saved_outputs: set[int] = set()
    extra: dict[int, int] = {}
    for tensor in packed:
        key = storage_key(tensor)
        if key in by_operand:
            saved_operands.add(by_operand[key])
        elif key in by_output:
            saved_outputs.add(by_output[key])
        else:
            extra[key] = tensor.untyped_storage().nbytes()
    return result, Saves(tuple(sorted(saved_operands)), tuple(sorted(saved_outputs)), tuple(extra.values()))
