"""Dimension expressions: text round trips, bounded evaluation against sympy, and sizes from torch.export."""

from __future__ import annotations

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import SYMBOLS, dim_expressions

from bwsk.errors import DimensionError
from bwsk.ir.dims import MAX_DEPTH, MAX_MAGNITUDE, Binary, Dim, Neg, evaluate_dim, negate, symbols, value_of
from bwsk.ir.parser import parse
from bwsk.ir.types import TensorType, dim_from_torch


def parsed_dim(text: str) -> Dim:
    program = parse(f'program "p"\ninput %x : f32[{text}]\n', verify=False)
    (dim,) = program.inputs[0].type.shape
    return dim


def reference_value(dim: Dim, sizes: dict[str, int]) -> sympy.Integer:
    """An independent reference: sympy's exact integers, floor of the rational quotient, Python-signed Mod."""
    if isinstance(dim, int):
        return sympy.Integer(dim)
    if isinstance(dim, str):
        return sympy.Integer(sizes[dim])
    if isinstance(dim, Neg):
        return -reference_value(dim.operand, sizes)
    left, right = reference_value(dim.left, sizes), reference_value(dim.right, sizes)
    if dim.op in ("//", "%") and right == 0:
        raise ZeroDivisionError
    operations = {
        "+": sympy.Add,
        "-": lambda a, b: a - b,
        "*": sympy.Mul,
        "//": lambda a, b: sympy.floor(sympy.Rational(a, b)),
        "%": sympy.Mod,
    }
    return operations[dim.op](left, right)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(dim_expressions)
def test_printed_expression_parses_back_to_the_same_tree(dim: Dim) -> None:
    text = str(dim)
    assert text.startswith("(") and text.endswith(")")
    assert parsed_dim(text) == dim


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(dim_expressions, st.fixed_dictionaries({name: st.integers(1, 1000) for name in SYMBOLS}))
def test_value_agrees_with_sympy(dim: Dim, sizes: dict[str, int]) -> None:
    try:
        reference = reference_value(dim, sizes)
    except ZeroDivisionError:
        with pytest.raises(DimensionError, match="divides by zero"):
            value_of(dim, sizes)
        return
    assert value_of(dim, sizes) == int(reference)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("(2*s0)", "(2*s0)"),
        ("( s0+1 )", "(s0 + 1)"),
        ("((s0 - 1)//2 + 1)", "((s0 - 1)//2 + 1)"),
        ("(s0-1)", "(s0 - 1)"),  # `-1` after an operand is the operator, then 1
        ("(s0%s1)", "(s0%s1)"),  # `%s1` after an operand is the operator, then s1
        ("(-s0)", "(-s0)"),
        ("(--s0)", "(--s0)"),
        ("(s0 - (s1 - 2))", "(s0 - (s1 - 2))"),
        ("((s0 - s1) - 2)", "(s0 - s1 - 2)"),
        ("(-(2*s0))", "(-(2*s0))"),
        ("(s0 * -3)", "(s0*-3)"),
        ("((s0))", "s0"),
        ("(7)", "7"),
        ("(2 - 1)", "(2 - 1)"),
    ],
)
def test_expression_spellings_and_canonical_text(text: str, canonical: str) -> None:
    dim = parsed_dim(text)
    assert str(dim) == canonical
    assert parsed_dim(canonical) == dim


def test_negating_a_literal_is_a_negative_literal() -> None:
    assert negate(3) == -3
    assert parsed_dim("(s0 + -(3))") == Binary("+", "s0", -3)
    with pytest.raises(DimensionError):
        Neg(3)


@pytest.mark.parametrize(
    ("dim", "sizes", "fragment"),
    [
        (Binary("//", "s0", Binary("-", "s0", 2)), {"s0": 2}, "divides by zero at s0=2"),
        (Binary("%", 7, "n"), {"n": 0}, "divides by zero at n=0"),
        (Binary("-", "s0", 5), {"s0": 2}, "is -3 at s0=2; a size cannot be negative"),
        (Binary("*", "s0", "s0"), {"s0": 2**31 + 1}, "overflows"),
        (Binary("+", "s0", 1), {"s0": MAX_MAGNITUDE}, "overflows"),
        (Binary("+", "s0", 1), {"s0": 2**70}, "overflows"),
        (Binary("+", "s0", 1), {}, "no size given for symbol 's0'"),
    ],
)
def test_evaluation_errors_are_one_line_dimension_errors(dim: Dim, sizes: dict[str, int], fragment: str) -> None:
    with pytest.raises(DimensionError) as info:
        evaluate_dim(dim, sizes)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bounds_are_inclusive_at_two_to_the_62() -> None:
    assert evaluate_dim(Binary("*", "s0", 2), {"s0": 2**61}) == MAX_MAGNITUDE
    assert evaluate_dim(Binary("-", Neg("s0"), 0), {"s0": 0}) == 0
    assert value_of(Neg("s0"), {"s0": MAX_MAGNITUDE}) == -MAX_MAGNITUDE


def test_depth_is_bounded_when_a_tree_is_built() -> None:
    dim: Dim = "s0"
    for _ in range(MAX_DEPTH):
        dim = Binary("+", dim, 1)
    assert dim.depth == MAX_DEPTH and evaluate_dim(dim, {"s0": 0}) == MAX_DEPTH
    with pytest.raises(DimensionError, match="deeper than"):
        Binary("+", dim, 1)
    with pytest.raises(DimensionError, match="deeper than"):
        Neg(dim)


def test_symbols_are_collected_from_the_whole_tree() -> None:
    assert symbols(parsed_dim("((s0 - 1)//seq + -batch % 3)")) == {"s0", "seq", "batch"}
    assert symbols(7) == set()


def output_values(exported: torch.export.ExportedProgram) -> list:
    (output,) = [n for n in exported.graph.nodes if n.op == "output"]
    return [node.meta["val"] for node in output.args[0]]


class _Shapes(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        doubled = torch.cat([x, x])
        return doubled, doubled.reshape(-1), x[::2], torch.nn.functional.pad(x, (0, 0, 1, 2)), x.flatten()[1:-1]


def test_sizes_of_a_dynamic_export_translate_and_evaluate_to_the_real_sizes() -> None:
    batch = torch.export.Dim("batch", min=4, max=64)
    exported = torch.export.export(_Shapes(), (torch.randn(6, 4),), dynamic_shapes=({0: batch},))
    dims = [tuple(dim_from_torch(s) for s in t.shape) for t in output_values(exported)]
    (symbol,) = symbols(dims[0][0])
    assert [str(TensorType(torch.float32, d)) for d in dims] == [
        f"f32[(2*{symbol}), 4]",
        f"f32[(8*{symbol})]",
        f"f32[(({symbol} + 1)//2), 4]",
        f"f32[({symbol} + 3), 4]",
        f"f32[(4*{symbol} - 2)]",
    ]
    for size in (4, 7, 64):
        eager = _Shapes()(torch.randn(size, 4))
        for shape, tensor in zip(dims, eager, strict=True):
            assert tuple(evaluate_dim(d, {symbol: size}) for d in shape) == tuple(tensor.shape)
            assert all(parsed_dim(str(d)) == d for d in shape)


class _AtLeastThree(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(torch.sym_max(x.shape[0], 3))


def test_a_size_the_grammar_cannot_state_is_a_dimension_error() -> None:
    exported = torch.export.export(_AtLeastThree(), (torch.randn(6, 4),), dynamic_shapes=({0: torch.export.Dim("batch", min=2)},))
    (fake,) = output_values(exported)
    with pytest.raises(DimensionError, match="Max"):
        dim_from_torch(fake.shape[0])
