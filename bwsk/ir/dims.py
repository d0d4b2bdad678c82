"""Tensor dimensions: a size, a symbol, or a small arithmetic expression evaluated with bounds.

A dimension is an `int` (a size), a `str` (a symbol such as `batch` or `s0`), or a
`DimExpr` (`(2*s0)`, `((s0 - 1)//2 + 1)`): integer literals and symbols combined by
`+ - * // %` and unary minus. Nothing else can be written, so evaluating a dimension
runs no code. Invariants: a `DimExpr` is at most `MAX_DEPTH` operators deep; `Neg`
never wraps an int (that is a negative literal); `evaluate_dim` keeps every
intermediate value within `±MAX_MAGNITUDE` and returns a size in `[0, MAX_MAGNITUDE]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bwsk.errors import DimensionError

MAX_MAGNITUDE = 2**62
MAX_DEPTH = 64
# Precedence of each operator; unary minus binds tighter than all of them.
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}
_NEG_PRECEDENCE = 3
_ATOM_PRECEDENCE = 4


@dataclass(frozen=True)
class Binary:
    """`left op right`, with `op` one of `+ - * // %` (floor division and modulo as in Python)."""

    op: str
    left: Dim
    right: Dim
    depth: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in PRECEDENCE:
            raise DimensionError(f"unknown dimension operator {self.op!r} (expected one of + - * // %)")
        _set_depth(self, 1 + max(depth_of(self.left), depth_of(self.right)))

    def __str__(self) -> str:
        return f"({dim_text(self)})"


@dataclass(frozen=True)
class Neg:
    """`-operand`; a negated integer literal is written as the literal itself."""

    operand: Dim
    depth: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.operand, int):
            raise DimensionError("a negated integer is a negative literal, not Neg")
        _set_depth(self, 1 + depth_of(self.operand))

    def __str__(self) -> str:
        return f"({dim_text(self)})"


DimExpr = Binary | Neg
Dim = int | str | DimExpr


def _set_depth(node: DimExpr, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise DimensionError(f"dimension expression nested deeper than {MAX_DEPTH} operators")
    object.__setattr__(node, "depth", depth)


def depth_of(dim: Dim) -> int:
    """How many operators deep `dim` is (0 for a size or a symbol)."""
    return dim.depth if isinstance(dim, (Binary, Neg)) else 0


def negate(dim: Dim) -> Dim:
    """`-dim`, folding a literal into a negative literal."""
    return -dim if isinstance(dim, int) else Neg(dim)


def _precedence(dim: Dim) -> int:
    if isinstance(dim, Binary):
        return PRECEDENCE[dim.op]
    if isinstance(dim, Neg):
        return _NEG_PRECEDENCE
    return _NEG_PRECEDENCE if isinstance(dim, int) and dim < 0 else _ATOM_PRECEDENCE


def _operand_text(dim: Dim, parenthesise: bool) -> str:
    text = dim_text(dim)
    return f"({text})" if parenthesise else text


def dim_text(dim: Dim) -> str:
    """The text of `dim` without outer parentheses: `+ -` spaced, `* // %` not, parentheses only where needed."""
    if isinstance(dim, Binary):
        mine = PRECEDENCE[dim.op]
        left = _operand_text(dim.left, _precedence(dim.left) < mine)
        right = _operand_text(dim.right, _precedence(dim.right) <= mine)
        return f"{left} {dim.op} {right}" if mine == 1 else f"{left}{dim.op}{right}"
    if isinstance(dim, Neg):
        return "-" + _operand_text(dim.operand, _precedence(dim.operand) < _NEG_PRECEDENCE)
    return str(dim)


def symbols(dim: Dim) -> set[str]:
    """The symbols `dim` mentions."""
    if isinstance(dim, str):
        return {dim}
    if isinstance(dim, Binary):
        return symbols(dim.left) | symbols(dim.right)
    if isinstance(dim, Neg):
        return symbols(dim.operand)
    return set()


def _bounded(value: int, dim: Dim) -> int:
    if abs(value) > MAX_MAGNITUDE:
        raise DimensionError(f"dimension {dim} overflows: a value exceeds 2**62 in magnitude")
    return value


def _value(dim: Dim, sizes: Mapping[str, int], whole: Dim) -> int:
    if isinstance(dim, int):
        return _bounded(dim, whole)
    if isinstance(dim, str):
        if dim not in sizes:
            raise DimensionError(f"dimension {whole}: no size given for symbol {dim!r}")
        return _bounded(sizes[dim], whole)
    if isinstance(dim, Neg):
        return -_value(dim.operand, sizes, whole)
    left, right = _value(dim.left, sizes, whole), _value(dim.right, sizes, whole)
    if dim.op == "+":
        return _bounded(left + right, whole)
    if dim.op == "-":
        return _bounded(left - right, whole)
    if dim.op == "*":
        return _bounded(left * right, whole)
    if right == 0:
        raise DimensionError(f"dimension {whole} divides by zero{_at(whole, sizes)}")
    return left // right if dim.op == "//" else left % right


def _at(dim: Dim, sizes: Mapping[str, int]) -> str:
    names = sorted(symbols(dim))
    return " at " + ", ".join(f"{name}={sizes[name]}" for name in names) if names else ""


def value_of(dim: Dim, sizes: Mapping[str, int]) -> int:
    """The integer `dim` denotes when each symbol takes its value in `sizes` (any sign; bounded)."""
    return _value(dim, sizes, dim)


def evaluate_dim(dim: Dim, sizes: Mapping[str, int]) -> int:
    """The size `dim` denotes when each symbol takes its value in `sizes`; DimensionError if not a size."""
    value = value_of(dim, sizes)
    if value < 0:
        raise DimensionError(f"dimension {dim} is {value}{_at(dim, sizes)}; a size cannot be negative")
    return value


def dim_from_sympy(expr: Any) -> Dim:
    """A torch.export size expression (a sympy expression over size symbols) as a dimension.

    Sums, products with integer coefficients, small integer powers, `FloorDiv` and
    `Mod`/`PythonMod` translate; anything else (`Max`, rationals, ...) is a DimensionError.
    """
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return str(expr)
    if expr.is_Add:
        first, *rest = expr.as_ordered_terms()
        result = dim_from_sympy(first)
        for term in rest:
            negative = term.could_extract_minus_sign()
            result = Binary("-" if negative else "+", result, dim_from_sympy(-term if negative else term))
        return result
    if expr.is_Mul:
        coefficient, factors = expr.as_coeff_mul()
        if coefficient.is_Integer:
            product = dim_from_sympy(factors[0])
            for factor in factors[1:]:
                product = Binary("*", product, dim_from_sympy(factor))
            if coefficient == 1:
                return product
            return negate(product) if coefficient == -1 else Binary("*", int(coefficient), product)
    if expr.is_Pow and expr.exp.is_Integer and 2 <= int(expr.exp) <= 8:
        base = dim_from_sympy(expr.base)
        product = base
        for _ in range(int(expr.exp) - 1):
            product = Binary("*", product, base)
        return product
    kind = type(expr).__name__
    if kind == "FloorDiv" or kind in ("Mod", "PythonMod"):
        return Binary("//" if kind == "FloorDiv" else "%", dim_from_sympy(expr.args[0]), dim_from_sympy(expr.args[1]))
    raise DimensionError(f"symbolic size {expr} uses {kind}, which a dimension cannot state (only + - * // % of integers and symbols)")
