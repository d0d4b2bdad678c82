"""One ATen call on drawn operands, evaluated with its judged operand replaced, and its outputs compared.

Invariants:
- Every evaluation runs on fresh copies of the fixed operands (an in-place op cannot leak into the
  next evaluation) with the global RNG reseeded, so random ops (dropout) draw the same mask each call.
- The judged outputs are `outputs` if given, else the rule's primary outputs, else all of them.
"""

from __future__ import annotations

from typing import Any

import torch

from bwsk.passes.classify.oracle_operands import draw_operands
from bwsk.passes.classify.rules import primary_outputs, resolve_op


class Harness:
    """Concrete operands for one call, and the op evaluated with the varying operand replaced."""

    def __init__(
        self,
        target: str,
        args: tuple,
        kwargs: dict,
        varying: int,
        item: int | None,
        outputs: tuple[int, ...] | None,
        seed: int,
        domain: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.op = resolve_op(target)
        self.varying, self.item, self.seed = varying, item, seed
        self.outputs = outputs or primary_outputs(target)
        self.args, self.kwargs = draw_operands(target, args, kwargs, varying, seed, domain)
        slot = self.args[varying]
        self.x: torch.Tensor = slot[item] if item is not None else slot

    def raw(self, x: torch.Tensor) -> Any:
        """The op's full result with the varying operand set to x (fresh copies, fixed RNG)."""
        args = [_clone(a) for a in self.args]
        if self.item is None:
            args[self.varying] = x
        else:
            args[self.varying][self.item] = x
        torch.default_generator.manual_seed(self.seed)  # random ops (dropout) draw the same mask each call
        return self.op(*args, **{k: _clone(v) for k, v in self.kwargs.items()})

    def __call__(self, x: torch.Tensor) -> list[Any]:
        """The judged outputs."""
        out = self.raw(x)
        if not isinstance(out, (list, tuple)):
            return [out]
        return [out[i] for i in (self.outputs or range(len(out)))]


def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.clone()
    return [_clone(u) for u in v] if isinstance(v, list) else v


def outputs_equal(a: list[Any], b: list[Any], atol: float) -> bool:
    """Outputs equal: tensors within atol (nan == nan), anything else by ==."""
    for u, v in zip(a, b, strict=True):
        if isinstance(u, torch.Tensor):
            if u.shape != v.shape or u.dtype != v.dtype:
                return False
            close = u.is_floating_point() and torch.allclose(u, v, rtol=0, atol=atol, equal_nan=True)
            if not (torch.equal(u, v) or close):
                return False
        elif u != v:
            return False
    return True


def float_outputs(values: list[Any]) -> list[torch.Tensor]:
    """Float outputs as flat real tensors: complex ones as (re, im) pairs, Python numbers as 1-element tensors."""
    found = []
    for v in values:
        if isinstance(v, float):
            v = torch.tensor([v], dtype=torch.float64)
        if isinstance(v, torch.Tensor) and v.is_complex():
            v = torch.view_as_real(v)
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            found.append(v.reshape(-1))
    return found


def float_vector(values: list[Any]) -> torch.Tensor:
    """The float outputs concatenated into one float64 vector (empty if there are none)."""
    parts = [p.to(torch.float64) for p in float_outputs(values)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
