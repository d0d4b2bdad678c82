"""What every injectivity rule shares: operand types, verdicts, the call being judged, the registry.

A verdict judges the map  x -> op(..., x, ...)  in the varying operand x, every other operand fixed.
Invariants every rule keeps:
- Arithmetic is exact (reals, integers): rounding inside float arithmetic is ignored, but a dtype
  conversion, explicit or by type promotion, that cannot represent every source value erases.
- "S": injective for every value of the other operands or, with `condition`, whenever the
  condition holds (the condition names the operand so a caller can check it). `domain` states,
  in a form the oracle can draw from, the values of operands the claim assumes (log: self > 0).
- "K": not injective for generic values of the other operands; an exception, if any, is named in
  the reason. `erased` counts degrees of freedom lost per row of the dimension(s) acted on; 0 means
  many-to-one without losing a dimension (gelu, sin); None when it depends on the data.
- "unknown": no rule, or operands the rule does not understand. A rule never guesses.
Multi-output ops are judged on `outputs` (indices into the op's result), by default on
`primary_outputs(target)`: the result proper, not the statistics or masks saved for backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from bwsk.ir.ops import resolve
from bwsk.passes.tensor_info import TensorInfo

GETITEM = "operator.getitem"  # the name a program (and so the dataflow) gives Python's tuple projection
DOMAINS = ("positive", "nonzero", "open_unit", "above_one", "above_minus_one")


@dataclass(frozen=True)
class Verdict:
    """S / K / unknown with a one-line reason naming the property and its size.

    `domain` pairs an operand name with one of DOMAINS: the values the verdict assumes of it.
    """

    kind: str
    reason: str
    condition: str | None = None
    erased: int | None = None
    domain: tuple[tuple[str, str], ...] = ()


def resolve_op(target: str) -> Callable[..., Any]:
    """The callable a target string names (see `bwsk.ir.ops.resolve`); KeyError when it names none."""
    found = resolve(target)
    if found is None:
        raise KeyError(f"{target} names no operator bwsk evaluates")
    return found


@dataclass(frozen=True)
class Call:
    """One application: arguments by schema name, and which operand (and list item) varies."""

    target: str
    bound: dict[str, Any]
    name: str | None
    item: int | None
    outputs: tuple[int, ...] | None

    def __getitem__(self, key: str) -> Any:
        return self.bound.get(key)

    @property
    def x(self) -> Any:
        value = self.bound.get(self.name)
        return value[self.item] if self.item is not None else value

    @property
    def op(self) -> str:
        """The operator's name without namespace and overload (`add` for aten.add.Tensor)."""
        return self.target.split(".")[1]


Rule = Callable[[Call], Verdict]
RULES: dict[str, Rule] = {}
NO_TENSOR: set[str] = set()  # targets with no tensor operand (constants, random draws)
LIST_OPERAND = {"aten.cat.default", GETITEM}
PRIMARY: dict[str, tuple[int, ...]] = {}


def rule(*targets: str, primary: tuple[int, ...] | None = None) -> Callable[[Rule], Rule]:
    """Register `fn` for `targets`; `primary` names the outputs judged by default (multi-output ops)."""

    def register(fn: Rule) -> Rule:
        RULES.update(dict.fromkeys(targets, fn))
        if primary is not None:
            PRIMARY.update(dict.fromkeys(targets, primary))
        return fn

    return register


def always(verdict: Verdict) -> Rule:
    return lambda c: verdict


S = partial(Verdict, "S")
U = partial(Verdict, "unknown")


def K(reason: str, erased: int | None = None) -> Verdict:
    return Verdict("K", reason, None, erased)


def fmt(shape: Any) -> str:
    return "x".join(map(str, shape)) or "scalar"


def dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def lift_meta(v: Any) -> Any:
    """TensorInfo -> an empty meta tensor of that type, inside lists too; devices -> meta."""
    if isinstance(v, TensorInfo):
        return torch.empty(v.shape, dtype=v.dtype, device="meta")
    if isinstance(v, torch.device):
        return torch.device("meta")
    return [lift_meta(u) for u in v] if isinstance(v, (list, tuple)) else v


def meta(c: Call) -> list[TensorInfo]:
    """The op's tensor output type(s), computed by running it on meta tensors."""
    out = resolve_op(c.target)(**{k: lift_meta(v) for k, v in c.bound.items()})
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [TensorInfo(tuple(o.shape), o.dtype) for o in outs if isinstance(o, torch.Tensor)]


def significand_bits(dtype: torch.dtype) -> int:
    return round(-math.log2(torch.finfo(dtype).eps)) + 1


def narrowing(src: torch.dtype, dst: torch.dtype) -> str | None:
    """Why a cast src -> dst cannot represent every src value, or None when it can."""
    if src == dst or src == torch.bool:
        return None
    if src.is_complex or dst.is_complex:
        raise NotImplementedError("complex dtypes are not modelled")
    name = f"{dt(src)} -> {dt(dst)}"
    if dst == torch.bool:
        return f"cast {name} keeps only zero/nonzero"
    if src.is_floating_point:
        if not dst.is_floating_point:
            return f"cast {name} truncates fractions"
        s, d = torch.finfo(src), torch.finfo(dst)
        if d.eps > s.eps:
            bits = f"{significand_bits(dst)} < {significand_bits(src)} significant bits"
            return f"dtype cast to lower precision rounds ({name}: {bits})"
        if d.max < s.max or d.smallest_normal > s.smallest_normal:
            return f"dtype cast {name} narrows the exponent range"
        return None
    s = torch.iinfo(src)
    if dst.is_floating_point:
        bits = significand_bits(dst)
        return None if max(-s.min, s.max) <= 2**bits else f"cast {name} rounds integers beyond 2^{bits}"
    d = torch.iinfo(dst)
    return None if d.min <= s.min and d.max >= s.max else f"cast {name} wraps out-of-range integers"


def promoted(c: Call, verdict: Verdict) -> Verdict:
    """`verdict`, unless the result dtype cannot hold every value of the varying operand."""
    why = narrowing(c.x.dtype, meta(c)[0].dtype)
    return K(f"implicit {why}") if why else verdict


def per_dim(v: Any, n: int) -> list[int]:
    """An int-or-list spatial argument as one value per spatial dim."""
    v = [v] if isinstance(v, int) else list(v)
    return v * n if len(v) == 1 else v


def dims_of(dim: Any, ndim: int) -> list[int]:
    """A reduction's `dim` argument as sorted non-negative dims (None or [] means all)."""
    dims = [dim] if isinstance(dim, int) else list(dim or [])
    return sorted({d % ndim for d in dims}) if dims else list(range(ndim))
