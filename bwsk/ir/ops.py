"""Operator names in the IR and the callables they denote.

`aten.add.Tensor` names `torch.ops.aten.add.Tensor` (any `torch.ops` namespace,
always with its overload); `operator.getitem`, `operator.mul` ... name the few
Python operators torch.export emits for tuples and symbolic sizes. Nothing else
resolves, so evaluating a program read from text can only call operators.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bwsk.ir.terms import canonical_name

PYTHON_OPERATORS: dict[str, Callable] = {
    f"operator.{name}": getattr(operator, name)
    for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq", "ne", "lt", "le", "gt", "ge")
}


@dataclass(frozen=True)
class Signature:
    """What the IR needs of an operator's schema: positional and keyword argument names."""

    positional: tuple[str, ...]
    keyword_only: tuple[str, ...]
    variadic: bool

    def accepts(self, n_positional: int, keywords: tuple[str, ...]) -> str | None:
        """None if the call shape fits, else a one-line reason."""
        if not self.variadic and n_positional > len(self.positional):
            return f"takes at most {len(self.positional)} positional argument(s), got {n_positional}"
        known = set(self.positional) | set(self.keyword_only)
        for key in keywords:
            if not self.variadic and key not in known:
                return f"has no argument named {key!r}"
        return None


@functools.cache
def resolve(name: str) -> Callable | None:
    """The callable an IR operator name denotes, or None if it names no operator."""
    name = canonical_name(name)
    if name in PYTHON_OPERATORS:
        return PYTHON_OPERATORS[name]
    parts = name.split(".")
    if len(parts) != 3:
        return None
    namespace, op, overload = parts
    try:
        packet = getattr(getattr(torch.ops, namespace), op)
        found = getattr(packet, overload)
    except (AttributeError, RuntimeError):
        return None
    return found if isinstance(found, torch._ops.OpOverload) else None


@functools.cache
def signature(name: str) -> Signature:
    """The argument names of a resolvable operator (Python operators are variadic)."""
    found = resolve(name)
    if not isinstance(found, torch._ops.OpOverload):
        return Signature((), (), variadic=True)
    schema = found._schema
    positional = tuple(a.name for a in schema.arguments if not a.kwarg_only)
    keyword_only = tuple(a.name for a in schema.arguments if a.kwarg_only)
    return Signature(positional, keyword_only, False)


def operator_name(target: object) -> str:
    """The IR name of an FX node target (an OpOverload or a Python operator)."""
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__name__", None)
    if module and qualname:
        name = canonical_name(f"{module}.{qualname}")
        if name in PYTHON_OPERATORS:
            return name
    raise KeyError(f"no IR name for operator {target!r}")
