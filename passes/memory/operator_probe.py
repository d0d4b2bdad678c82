"""One primitive call probed on meta tensors: what it does to storages and what autograd saves.

Operands are meta leaves laid out as in the program (shape, strides, offset,
dtype; requires_grad as eager training would have it). Results are cached by
operator, operand layouts and static arguments, so each distinct call runs once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from bwsk.ir import ops
from bwsk.passes.classify.rules import TensorInfo
from bwsk.passes.dataflow import Call
from bwsk.passes.memory.saved_tensors import Saves, flat_outputs, probe, storage_key


@dataclass(frozen=True)
class Layout:
    """A tensor's layout as a probe needs it; `grad`: requires_grad in eager training."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: torch.dtype
    grad: bool

    @staticmethod
    def of(tensor: torch.Tensor) -> Layout:
        return Layout(tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset(), tensor.dtype, tensor.requires_grad)

    def tensor(self) -> torch.Tensor:
        """A meta leaf with this layout on a storage of its own."""
        extent = 1 + sum((size - 1) * stride for size, stride in zip(self.shape, self.stride)) if all(self.shape) else 0
        storage = torch.empty(self.offset + extent, dtype=self.dtype, device="meta").untyped_storage()
        tensor = torch.empty(0, dtype=self.dtype, device="meta").set_(storage, self.offset, self.shape, self.stride)
        return tensor.requires_grad_(self.grad)


@dataclass(frozen=True)
class Probed:
    """What one call does to storages: per flat output its layout and what storage it shares, and what it saves.

    `shares[i]` is ("operand", k), ("output", j) for an earlier output j, or None for a new storage.
    """

    layouts: tuple[Layout | None, ...]
    shares: tuple[tuple[str, int] | None, ...]
    nbytes: tuple[int, ...]
    saves: Saves
    exact: bool  # False: the probe failed and every operand is assumed saved


_PROBES: dict[tuple, Probed] = {}


def _static(arg: Any) -> Any:
    """A hashable stand-in for an argument template: tensors become one marker."""
    if isinstance(arg, TensorInfo):
        return TensorInfo
    if isinstance(arg, (list, tuple)):
        return tuple(_static(a) for a in arg)
    return arg


def fill_operands(arg: Any, tensors: list[torch.Tensor]) -> Any:
    """`arg` with each TensorInfo replaced by the next of `tensors` (in the order the trace listed operands)."""
    if isinstance(arg, TensorInfo):
        return tensors.pop()
    if isinstance(arg, list):
        return [fill_operands(a, tensors) for a in arg]
    if isinstance(arg, tuple):
        return tuple(fill_operands(a, tensors) for a in arg)
    return arg


def probe_call(call: Call, layouts: list[Layout]) -> Probed:
    """What `call` saves when its operands have `layouts` (cached by operator, layouts and static arguments)."""
    key = (call.target, tuple(layouts), _static(call.args), _static(tuple(call.kwargs.items())))
    found = _PROBES.get(key)
    if found is None:
        found = _PROBES[key] = _probe(call, layouts)
    return found


def _probe(call: Call, layouts: list[Layout]) -> Probed:
    function = ops.resolve(call.target)
    operands = [layout.tensor() for layout in layouts]

    def run(grad: bool) -> Any:
        stack = list(reversed(operands if grad else [o.detach() for o in operands]))
        args = [fill_operands(a, stack) for a in call.args]
        kwargs = {k: fill_operands(v, stack) for k, v in call.kwargs.items()}
        return function(*args, **kwargs)

    try:
        result, saves = probe(lambda: run(True), operands)
        exact = True
    except Exception:  # an operator autograd cannot run on meta: assume it saves every operand
        with torch.no_grad():
            result = run(False)
        saves, exact = Saves(tuple(range(len(operands))), (), ()), False
    by_operand = {storage_key(t): k for k, t in reversed(list(enumerate(operands)))}
    items = flat_outputs(result)
    layouts_out: list[Layout | None] = []
    shares: list[tuple[str, int] | None] = []
    nbytes: list[int] = []
    seen: dict[int, int] = {}
    for position, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            layouts_out.append(None)
            shares.append(None)
            nbytes.append(0)
            continue
        layout = Layout.of(item)
        key = storage_key(item)
        layouts_out.append(layout if exact else replace(layout, grad=_grad(layouts, item)))
        if key in by_operand:
            shares.append(("operand", by_operand[key]))
        elif key in seen:
            shares.append(("output", seen[key]))
        else:
            shares.append(None)
            seen[key] = position
        nbytes.append(item.untyped_storage().nbytes())
    return Probed(tuple(layouts_out), tuple(shares), tuple(nbytes), saves, exact)


def _grad(layouts: list[Layout], output: torch.Tensor) -> bool:
    """Whether eager autograd would track `output`: some operand requires grad and it is floating or complex."""
    return any(layout.grad for layout in layouts) and (output.is_floating_point() or output.is_complex())
