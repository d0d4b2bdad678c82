"""The combinator laws, proven by the evaluator on random tensors, and the rewrite engine that uses them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import EXAMPLES
from strategies import ELEMENTWISE_TEMPLATES, combinator_terms, terms
from torch.testing import assert_close

from bwsk.ir.evaluator import evaluate_term
from bwsk.ir.laws import COMBINATOR_LAWS
from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.ir.rewrite import Rewriter, Rule, Var, instantiate, match, parse_pattern, rewrite_program
from bwsk.ir.terms import HOLE, App, Prim, Ref, Term, children
from bwsk.ir.verifier import ArityChecker, ArityError, verify

A, B_REF = Ref("value", "a"), Ref("value", "b")
SIN = Prim("aten.sin.default", (HOLE,))
EXP = Prim("aten.exp.default", (HOLE,))
SUB = Prim("aten.sub.Tensor", (HOLE, HOLE))
LERP = Prim("aten.lerp.Tensor", (HOLE, HOLE, HOLE))
# Closed terms to put in for pattern variables: values, and functions of arity 1 to 3 whose
# results change when their arguments are swapped or dropped.
POOL: tuple[Term, ...] = (A, B_REF, SIN, EXP, SUB, LERP)
SHAPE = (3, 4)
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.bwsk"))


def arity_of(term: Term) -> int:
    return ArityChecker(lambda ref: 0).arity(term)


def variables(pattern: Term) -> list[str]:
    if isinstance(pattern, Var):
        return [pattern.name]
    if isinstance(pattern, App):
        return sorted(set(variables(pattern.fn)) | set(variables(pattern.arg)))
    return []


def instantiations(rule: Rule) -> Iterator[tuple[dict[str, Term], Term, Term, int]]:
    """Every assignment of POOL terms to the rule's variables where both sides are well formed with one arity."""
    names = variables(rule.lhs)
    for chosen in itertools.product(POOL, repeat=len(names)):
        bindings = dict(zip(names, chosen))
        lhs, rhs = instantiate(rule.lhs, bindings), instantiate(rule.rhs, bindings)
        try:
            arity = arity_of(lhs)
            if arity_of(rhs) != arity:
                continue
        except ArityError:
            continue
        yield bindings, lhs, rhs, arity


def random_values(seed: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    rng = torch.Generator().manual_seed(seed)
    values = {"a": torch.randn(SHAPE, generator=rng), "b": torch.randn(SHAPE, generator=rng)}
    return values, [torch.randn(SHAPE, generator=rng) for _ in range(4)]


def assert_same_function(left: Term, right: Term, arity: int, seed: int) -> None:
    values, args = random_values(seed)
    expected = evaluate_term(left, *args[:arity], values=values)
    assert isinstance(expected, torch.Tensor)
    assert_close(evaluate_term(right, *args[:arity], values=values), expected, rtol=0, atol=0, equal_nan=True)


def size(term: Term) -> int:
    """Nodes in the term as a tree (shared sub-terms counted at every use), embedded terms included."""
    return 1 + sum(size(child) for child in children(term))


def subterms(term: Term) -> Iterator[Term]:
    yield term
    for child in children(term):
        yield from subterms(child)


# ---- every law, proven on random tensors -----------------------------------------------------


@pytest.mark.parametrize("law", COMBINATOR_LAWS, ids=lambda law: law.name)
def test_law_holds_on_random_tensors(law: Rule) -> None:
    found = list(instantiations(law))
    assert found, f"no well-formed instantiation of {law}"
    for seed, (_, lhs, rhs, arity) in enumerate(found):
        assert_same_function(lhs, rhs, arity, seed)


@pytest.mark.parametrize("law", COMBINATOR_LAWS, ids=lambda law: law.name)
def test_law_is_checked_with_a_function_for_a_variable(law: Rule) -> None:
    found = list(instantiations(law))
    if variables(law.lhs):
        assert any(arity_of(term) > 0 for bindings, *_ in found for term in bindings.values())
    else:
        # A law without variables (W K -> I) relates two functions directly.
        assert [arity for *_, arity in found] == [arity_of(law.rhs)] and arity_of(law.rhs) > 0


@pytest.mark.parametrize("law", COMBINATOR_LAWS, ids=lambda law: law.name)
def test_law_shrinks_the_term(law: Rule) -> None:
    # Variables stand for terms of any size; no variable is duplicated on the right.
    assert size(law.rhs) < size(law.lhs)
    right = variables(law.rhs)
    assert set(right) <= set(variables(law.lhs))
    assert len(right) == len(set(right))


def test_law_names_are_unique() -> None:
    names = [law.name for law in COMBINATOR_LAWS]
    assert len(names) == len(set(names))


def test_a_wrong_law_is_caught_by_the_same_check() -> None:
    wrong = Rule.parse("C-drop", "C ?f ?x ?y -> ?f ?x ?y")
    failures = 0
    for seed, (_, lhs, rhs, arity) in enumerate(instantiations(wrong)):
        try:
            assert_same_function(lhs, rhs, arity, seed)
        except AssertionError:
            failures += 1
    assert failures > 0


# ---- the rewrite engine ----------------------------------------------------------------------

BINDINGS = {"f": SIN, "g": EXP, "h": SUB, "x": A, "y": B_REF}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("B ?f I", "?f"),
        ("B I ?f", "?f"),
        ("S (K ?f) ?g", "B ?f ?g"),
        ("S ?h (K ?x)", "C ?h ?x"),
        ("S ?h I", "W ?h"),
        ("S (K ?f) I", "?f"),
        ("C (C ?h)", "?h"),
        ("W K", "I"),
        ("C K ?x", "I"),
        ("K ?x ?y", "?x"),
        ("I ?x", "?x"),
        ("B ?f ?g ?x", "?f (?g ?x)"),
        ("C ?h ?x ?y", "?h ?y ?x"),
        ("B I (B ?f I)", "?f"),
        ("S (K (B ?f I)) (C K ?x)", "?f"),
        ("W (K ?f)", "?f"),
        ("S (K ?f) (K ?g)", "K (?f ?g)"),
    ],
)
def test_rewriter_direct_examples(before: str, after: str) -> None:
    rewrite = Rewriter(COMBINATOR_LAWS)
    assert rewrite(instantiate(parse_pattern(before), BINDINGS)) is instantiate(parse_pattern(after), BINDINGS)


def test_rewriter_rewrites_inside_primitive_arguments_and_counts_firings() -> None:
    prim = Prim("aten.cat.default", ([App(parse_pattern("I"), A), HOLE],), (("dim", App(App(parse_pattern("K"), A), B_REF)),))
    rewrite = Rewriter(COMBINATOR_LAWS)
    assert rewrite(prim) is Prim("aten.cat.default", ([A, HOLE],), (("dim", A),))
    assert rewrite.fired["I-reduce"] == 1 and rewrite.fired["K-reduce"] == 1
    assert sum(rewrite.fired.values()) == 2


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(combinator_terms((A, SIN, SUB)))
def test_rewriter_reaches_a_fixpoint_and_never_grows_a_term(term: Term) -> None:
    rewrite = Rewriter(COMBINATOR_LAWS)
    result = rewrite(term)
    assert Rewriter(COMBINATOR_LAWS)(result) is result
    for sub in subterms(result):
        assert not any(match(law.lhs, sub, {}) for law in COMBINATOR_LAWS), sub
    assert size(result) <= size(term)
    if sum(rewrite.fired.values()):
        assert size(result) < size(term)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 3).flatmap(lambda n: st.tuples(st.just(n), terms(n, [(A, 0), (B_REF, 0)], ELEMENTWISE_TEMPLATES))), st.integers(0, 2**16)
)
@pytest.mark.slow
def test_rewritten_term_evaluates_equal_to_the_original(case: tuple[int, Term], seed: int) -> None:
    arity, term = case
    assert arity_of(term) == arity
    rewritten = Rewriter(COMBINATOR_LAWS)(term)
    assert arity_of(rewritten) == arity
    assert_same_function(term, rewritten, arity, seed)


REDUNDANT = """program "redundant"
input %x : f32[3, 4]
param @w : f32[3, 4]
%f : fn(f32[3, 4]) -> f32[3, 4] = S (K aten.sin.default(_)) (B I aten.exp.default(_))
%g : fn(f32[3, 4]) -> f32[3, 4] = S aten.sub.Tensor(_, _) (K @w)
%y : f32[3, 4] = C K %x (I (%g (%f %x)))
%z = aten.add.Tensor(K %y %x, W (K aten.neg.default(_)) %y)
output %y : f32[3, 4], %z : f32[3, 4]
"""


@pytest.mark.slow
def test_rewrite_program_verifies_and_evaluates_equal() -> None:
    program = parse(REDUNDANT)
    rewritten = rewrite_program(program, COMBINATOR_LAWS)
    assert verify(rewritten) is rewritten
    text = print_program(rewritten)
    assert "%f : fn(f32[3, 4]) -> f32[3, 4] = B aten.sin.default(_) aten.exp.default(_)" in text
    assert "%g : fn(f32[3, 4]) -> f32[3, 4] = C aten.sub.Tensor(_, _) @w" in text
    assert "%y : f32[3, 4] = %g (%f %x)" in text
    assert "%z = aten.add.Tensor(%y, aten.neg.default(_) %y)" in text
    for before, after in zip(program.defs, rewritten.defs):
        assert size(after.term) < size(before.term)
    values, args = random_values(7)
    for got, expected in zip(rewritten(args[0], params={"w": values["a"]}), program(args[0], params={"w": values["a"]})):
        assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_examples_are_already_in_normal_form(path: Path) -> None:
    program = parse(path.read_text())
    assert rewrite_program(program, COMBINATOR_LAWS) == program
