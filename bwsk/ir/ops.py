"""Operator names in the IR and the callables they denote.

`aten.add.Tensor` names `torch.ops.aten.add.Tensor` (an `aten` or `prims` operator,
always with its overload); `operator.getitem`, `operator.mul` ... name the few
Python operators torch.export emits for tuples and symbolic sizes. Nothing else
resolves, so evaluating a program read from text can only call operators:

* a `ns.op.overload` name resolves only in the `aten` and `prims` namespaces,
  only if the dispatcher's registry holds the schema `ns::op.overload`, and only
  to an `OpOverload` that takes or returns a tensor; no attribute of a Python
  object is looked up before that (so `aten.__class__.__init__` names nothing).
  TorchScript's builtins on strings and lists (`aten._print`, `aten.save`,
  `aten.warn`) are thereby excluded, and `aten.from_file` (it reads the file a
  string names) is refused by name;
* the Python operators take numbers and tensors only (`operator.getitem` also
  tuples and lists), and their integer operands and results stay within `±2**62`, so a
  program cannot build huge integers (`operator.pow(9, 387420489)`) or strings.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bwsk.ir.dims import MAX_MAGNITUDE
from bwsk.ir.terms import canonical_name

NAMESPACES = ("aten", "prims")
_FILE_OPERATORS = frozenset({"aten.from_file"})
_NUMBERS = (int, float, torch.SymInt, torch.SymFloat, torch.SymBool, torch.Tensor)


def _on_numbers(function: Callable) -> Callable:
    """`function` on numbers and tensors only, integer operands and results within ±2**62 (OverflowError otherwise)."""
    name = function.__name__

    def checked(*args: object) -> object:
        for arg in args:
            if not isinstance(arg, _NUMBERS):
                raise TypeError(f"operator.{name} takes numbers or tensors, not {type(arg).__name__}")
            if isinstance(arg, int) and abs(arg) > MAX_MAGNITUDE:
                raise OverflowError(f"operator.{name}: an integer operand beyond 2**62")
        if function is operator.pow and isinstance(args[0], int) and isinstance(args[1], int) and abs(args[0]) > 1 and args[1] > 62:
            raise OverflowError("operator.pow: the result would exceed 2**62")
        result = function(*args)
        if isinstance(result, int) and abs(result) > MAX_MAGNITUDE:
            raise OverflowError(f"operator.{name}: the result exceeds 2**62")
        return result

    checked.__name__ = checked.__qualname__ = name
    checked.__doc__ = function.__doc__
    return checked


PYTHON_OPERATORS: dict[str, Callable] = {
    "operator.getitem": operator.getitem,
    **{
        f"operator.{name}": _on_numbers(getattr(operator, name))
        for name in ("add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq", "ne", "lt", "le", "gt", "ge")
    },
}


NO_DEFAULT = ...  # the default of an argument that has none


@dataclass(frozen=True)
class Signature:
    """What bwsk reads of an operator's schema (the one reader of schemas): argument names, defaults, tags.

    `defaults` holds (name, default or `NO_DEFAULT`) for every argument in schema order;
    `devices` names the arguments that choose a device (where a constructor allocates).
    """

    positional: tuple[str, ...]
    keyword_only: tuple[str, ...]
    variadic: bool
    defaults: tuple[tuple[str, object], ...] = ()
    pointwise: bool = False
    devices: tuple[str, ...] = ()

    def on_device(self, args: list, kwargs: dict, device: object) -> None:
        """Set every device argument of a call (given or not, positional or by keyword) to `device`, in place."""
        for name in self.devices:
            at = self.positional.index(name) if name in self.positional else len(args)
            if at < len(args):
                args[at] = device
            else:
                kwargs[name] = device

    def bind(self, args: tuple, kwargs: dict) -> dict[str, object]:
        """Arguments by schema name, defaults filled in (a variadic operator binds nothing)."""
        bound: dict[str, object] = {}
        for name, default in self.defaults:
            if name in self.positional and self.positional.index(name) < len(args):
                bound[name] = args[self.positional.index(name)]
            elif name in kwargs:
                bound[name] = kwargs[name]
            elif default is not NO_DEFAULT:
                bound[name] = default
        return bound

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
    if namespace not in NAMESPACES or f"{namespace}.{op}" in _FILE_OPERATORS:
        return None
    try:
        schema = torch._C._get_schema(f"{namespace}::{op}", "" if overload == "default" else overload)
    except RuntimeError:
        return None  # not a registered operator: nothing is looked up on a Python object
    if not any("Tensor" in str(a.type) for a in (*schema.arguments, *schema.returns)):
        return None  # a TorchScript builtin on strings, lists or scalars
    try:
        found = getattr(getattr(getattr(torch.ops, namespace), op), overload)
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
    defaults = tuple((a.name, a.default_value if a.has_default_value() else NO_DEFAULT) for a in schema.arguments)
    devices = tuple(a.name for a in schema.arguments if str(a.type) in ("Device", "Optional[Device]"))
    return Signature(positional, keyword_only, False, defaults, torch.Tag.pointwise in found.tags, devices)


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
