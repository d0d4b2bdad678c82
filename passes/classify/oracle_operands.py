"""Concrete operands for one ATen call, drawn inside a verdict's domain.

Invariants:
- Every drawn value satisfies the verdict's `domain` (log: self > 0; see rules.base.DOMAINS); integers stay integers.
- Ids into an indexed tensor are valid. When the indexed tensor is judged, the ids read every entry
  the shapes allow (an entry never read would be a false K witness); when the ids are judged, an
  integer indexed tensor holds distinct values (equal rows would be a false K witness).
- Floats are float64 unless a dtype in the call makes precision part of the question or integer
  operands are mixed in (int64 x float32 is judged in float32, as the model runs it).
- The same seed draws the same operands.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bwsk.passes.classify.rules import TensorInfo, bind_arguments, operand_name
from bwsk.passes.dataflow import iter_tensor_infos

_CASTS = {"aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten._assert_tensor_metadata.default"}
_INDEXED = {
    "aten.embedding.default": "weight",
    "aten.gather.default": "self",
    "aten.index_select.default": "self",
    "aten.index.Tensor": "self",
}


def call_tensor_infos(args: tuple, kwargs: dict) -> list[TensorInfo]:
    """Every tensor operand of a described call, positional then keyword."""
    return list(iter_tensor_infos((args, tuple(kwargs.values()))))


def index_bounds(target: str, bound: dict[str, Any]) -> dict[tuple[str, int | None], tuple[int, int | None]]:
    """(operand, list item) -> (exclusive upper bound of valid ids, dim of the indexed tensor it walks)."""
    if target == "aten.embedding.default":
        return {("indices", None): (bound["weight"].shape[0], None)}
    if target == "aten.embedding_dense_backward.default":
        return {("indices", None): (bound["num_weights"], None)}
    if target in (
        "aten.gather.default",
        "aten.index_select.default",
        "aten.scatter.src",
        "aten.scatter.value",
        "aten.scatter_add.default",
        "aten.scatter_reduce.two",
    ):
        dim = bound["dim"] % len(bound["self"].shape)
        return {("index", None): (bound["self"].shape[dim], dim)}
    if target == "aten.index.Tensor":
        return {("indices", j): (bound["self"].shape[j], j) for j, t in enumerate(bound["indices"]) if isinstance(t, TensorInfo)}
    return {}


def _covering(target: str, bound: dict[str, Any], info: TensorInfo, high: int, dim: int | None, item: int | None) -> torch.Tensor:
    """Deterministic ids that read every entry of the indexed tensor whenever the shapes allow it."""
    if target == "aten.gather.default":
        line = torch.arange(info.shape[dim]) % high
        view = [1] * len(info.shape)
        view[dim] = info.shape[dim]
        return line.view(view).expand(info.shape).clone()
    if target != "aten.index.Tensor":
        return (torch.arange(info.numel) % high).view(info.shape)
    tensors = [(j, t) for j, t in enumerate(bound["indices"]) if isinstance(t, TensorInfo)]
    shape = torch.broadcast_shapes(*(t.shape for _, t in tensors))
    sizes = [bound["self"].shape[j] for j, _ in tensors]
    flat = torch.arange(math.prod(shape)) % math.prod(sizes)
    wanted = torch.stack(torch.unravel_index(flat, sizes)).view(len(sizes), *shape)
    k = [j for j, _ in tensors].index(item)
    padded = (1,) * (len(shape) - len(info.shape)) + info.shape
    picked = wanted[k][tuple(slice(None) if n > 1 else slice(0, 1) for n in padded)]
    return picked.reshape(info.shape)


def in_domain(x: torch.Tensor, domain: str | None) -> torch.Tensor:
    """Random values moved into a verdict's domain (see rules.base.DOMAINS); integers stay integers."""
    if domain is None or x.dtype == torch.bool:
        return x
    magnitude = x.abs() + (1 if not x.is_floating_point() else 0.5)
    moved = {
        "positive": magnitude,
        "negative": -magnitude,
        "nonzero": torch.where(x < 0, -magnitude, magnitude),
        "above_one": magnitude + 1,
        "above_minus_one": magnitude - (1 if not x.is_floating_point() else 0.9),
        "open_unit": torch.tanh(x) * 0.9 if x.is_floating_point() else x.clamp(0, 0),
    }[domain]
    return moved.to(x.dtype)


def draw_operands(
    target: str, args: tuple, kwargs: dict, varying: int, seed: int, domain: tuple[tuple[str, str], ...]
) -> tuple[list[Any], dict[str, Any]]:
    """`args` and `kwargs` with every TensorInfo (also inside lists) replaced by a drawn tensor; devices become the CPU."""
    bound = bind_arguments(target, args, kwargs)
    bounds = index_bounds(target, bound)
    covering = _INDEXED.get(target) == operand_name(target, varying)
    distinct = target in _INDEXED and not covering
    has_dtype = any(isinstance(v, torch.dtype) for v in (*args, *kwargs.values()))
    dtypes = {t.dtype for t in call_tensor_infos(args, kwargs)}
    floats = {d for d in dtypes if d.is_floating_point}
    one_float = len(floats) <= 1 and floats <= {torch.float32, torch.float64} and not (dtypes - floats - {torch.bool})
    upcast = target not in _CASTS and not has_dtype and one_float  # int x float stays in the model's float dtype
    domains = dict(domain)
    gen = torch.Generator().manual_seed(seed)

    def make(info: TensorInfo, name: str | None, item: int | None) -> torch.Tensor:
        if (name, item) in bounds:
            high, dim = bounds[(name, item)]
            if covering:
                return _covering(target, bound, info, high, dim, item)
            return torch.randint(0, high, info.shape, generator=gen, dtype=info.dtype)
        if distinct and name == _INDEXED[target] and not info.dtype.is_floating_point:
            return torch.randperm(info.numel, generator=gen).view(info.shape).to(info.dtype)
        if info.dtype == torch.bool:
            return torch.rand(info.shape, generator=gen) < 0.5
        if info.dtype.is_complex:
            return torch.randn(info.shape, generator=gen, dtype=torch.complex128).to(info.dtype)
        if not info.dtype.is_floating_point:
            low = 0 if torch.iinfo(info.dtype).min == 0 else -3
            x = torch.randint(low, 4, info.shape, generator=gen, dtype=info.dtype)
            return in_domain(x, domains.get(name)) if name in domains else x
        x = in_domain(torch.randn(info.shape, generator=gen, dtype=torch.float64), domains.get(name))
        return x if upcast else x.to(info.dtype)

    def lift(v: Any, name: str | None) -> Any:
        if isinstance(v, TensorInfo):
            return make(v, name, None)
        if isinstance(v, torch.device) or (name == "device" and v is not None):
            return torch.device("cpu")  # traced calls carry device=meta; the check runs on the CPU
        if isinstance(v, (list, tuple)):
            return [make(u, name, j) if isinstance(u, TensorInfo) else u for j, u in enumerate(v)]
        return v

    return [lift(a, operand_name(target, i)) for i, a in enumerate(args)], {k: lift(v, k) for k, v in kwargs.items()}
