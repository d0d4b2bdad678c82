"""Hash-consed terms: structural equality is identity, literals keep their Python type, nodes are immutable."""

from __future__ import annotations

import copy
import gc
import math
import pickle
import weakref

import pytest
import torch

from bwsk.ir.terms import (
    HOLE,
    App,
    B,
    C,
    Comb,
    Hole,
    I,
    K,
    ListArg,
    Lit,
    Prim,
    Ref,
    S,
    W,
    apply,
    as_arg,
    children,
    spine,
)

ADD = Prim("aten.add.Tensor", (HOLE, HOLE))


def sample_term() -> App:
    """A term touching every node kind, with awkward literals."""
    prim = Prim(
        "aten.cat.default",
        ([HOLE, Prim("aten.relu.default", (Ref("state", "w"),)), [Lit(math.nan), -0.0]], 1),
        (("alpha", Lit(torch.float32)), ("beta", [HOLE, "é\n", None, True])),
    )
    return apply(S, apply(B, prim, I), App(K, Ref("value", "x")))


# ---- hash-consing ----------------------------------------------------------------------------


def test_equal_structure_is_the_same_object() -> None:
    assert sample_term() is sample_term()
    assert Prim("aten.add.Tensor", (Hole(), Hole())) is ADD
    assert Comb("S") is S
    assert Ref("value", "x") is Ref("value", "x")
    assert App(ADD, Ref("value", "x")) is App(ADD, Ref("value", "x"))
    assert ListArg((Lit(1), Lit(2))) is as_arg([1, 2]) is as_arg((1, 2))


def test_different_structure_is_a_different_object() -> None:
    assert Ref("value", "x") is not Ref("state", "x")
    assert App(S, K) is not App(K, S)
    assert Prim("aten.sub.Tensor", (HOLE, HOLE)) is not Prim("aten.sub.Tensor", (HOLE, HOLE), (("alpha", 1),))
    assert Prim("aten.sum.dim_IntList", (HOLE, [1])) is not Prim("aten.sum.dim_IntList", (HOLE, [[1]]))


def test_equality_and_hashing_are_by_identity() -> None:
    table = {sample_term(): "found"}
    assert table[sample_term()] == "found"
    assert sample_term() == sample_term()
    assert hash(sample_term()) == hash(sample_term())


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, 1.0), (1, True), (1.0, True), (0, False), (0, None), (0.0, -0.0), ("1", 1), (torch.float32, "torch.float32")],
    ids=repr,
)
def test_literals_of_equal_python_value_but_different_type_are_different(a: object, b: object) -> None:
    assert Lit(a) is not Lit(b)
    assert type(Lit(a).value) is type(a)
    assert Prim("aten.mul.Scalar", (HOLE, a)) is not Prim("aten.mul.Scalar", (HOLE, b))


def test_nan_literal_equals_itself() -> None:
    nan = Lit(math.nan)
    assert Lit(float("nan")) is nan
    assert Lit(-math.nan) is nan
    assert math.isnan(nan.value)
    assert Prim("aten.mul.Scalar", (HOLE, float("nan"))) is Prim("aten.mul.Scalar", (HOLE, math.nan))


def test_static_values_of_each_kind_are_literals() -> None:
    for value in (torch.int8, torch.sparse_coo, torch.channels_last, torch.device("cuda:0"), "s", None):
        assert Lit(value).value == value
    assert Lit(torch.device("cpu")) is Lit(torch.device("cpu"))
    assert Lit(torch.device("cpu")) is not Lit(torch.device("meta"))


def test_non_static_values_are_rejected() -> None:
    with pytest.raises(TypeError, match="not a static IR value"):
        Lit(torch.zeros(1))
    with pytest.raises(TypeError):
        Lit(object())
    with pytest.raises(ValueError, match="unknown combinator"):
        Comb("Y")
    with pytest.raises(ValueError, match="unknown reference kind"):
        Ref("local", "x")


@pytest.mark.slow
def test_unreferenced_nodes_are_collected() -> None:
    node = Ref("value", "only-used-in-this-test")
    alive = weakref.ref(node)
    del node
    gc.collect()
    assert alive() is None


# ---- primitive arity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prim", "arity"),
    [
        (Prim("aten.full.default", ([2, 3], 1.0)), 0),
        (Prim("aten.relu.default", (HOLE,)), 1),
        (ADD, 2),
        (Prim("aten.add.Tensor", (HOLE, Ref("value", "x"))), 1),
        (Prim("aten.cat.default", ([HOLE, HOLE, HOLE], 1)), 3),
        (Prim("aten.cat.default", ([HOLE, [HOLE, [HOLE, 4]]], HOLE)), 4),
        (Prim("aten.add.Tensor", (HOLE, HOLE), (("alpha", HOLE),)), 3),
        (Prim("aten.addcmul.default", (HOLE,), (("tensor1", [HOLE]), ("value", 0.5))), 2),
        # A hole inside an embedded term belongs to that term, not to the outer primitive.
        (Prim("aten.relu.default", (Prim("aten.exp.default", (HOLE,)),)), 0),
    ],
    ids=lambda v: repr(v) if isinstance(v, int) else v.op,
)
def test_prim_arity_counts_holes_in_lists_and_keywords(prim: Prim, arity: int) -> None:
    assert prim.arity == arity


# ---- immutability, copying, pickling ---------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "field"),
    [(S, "name"), (Ref("value", "x"), "name"), (App(S, K), "fn"), (ADD, "arity"), (ADD, "op"), (Lit(1), "value"), (ListArg(()), "items")],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_nodes_are_immutable(node: object, field: str) -> None:
    before = getattr(node, field)
    with pytest.raises(AttributeError, match="immutable"):
        setattr(node, field, before)
    with pytest.raises(AttributeError, match="immutable"):
        delattr(node, field)
    with pytest.raises(AttributeError):
        node.extra = 1
    assert getattr(node, field) == before


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_preserves_identity(protocol: int) -> None:
    term = sample_term()
    assert pickle.loads(pickle.dumps(term, protocol)) is term
    assert pickle.loads(pickle.dumps(HOLE, protocol)) is HOLE
    assert pickle.loads(pickle.dumps(Lit(math.nan), protocol)) is Lit(math.nan)


def test_copy_and_deepcopy_preserve_identity() -> None:
    term = sample_term()
    assert copy.copy(term) is term
    assert copy.deepcopy(term) is term
    nested = copy.deepcopy({"t": [term, ADD]})
    assert nested["t"][0] is term and nested["t"][1] is ADD


# ---- helpers ---------------------------------------------------------------------------------


def test_apply_and_spine_are_inverse() -> None:
    x, y = Ref("value", "x"), Ref("value", "y")
    term = apply(C, ADD, x, y)
    assert term is App(App(App(C, ADD), x), y)
    assert spine(term) == (C, [ADD, x, y])
    assert spine(W) == (W, [])


def test_children_lists_application_parts_and_embedded_terms() -> None:
    x, w = Ref("value", "x"), Ref("state", "w")
    inner = Prim("aten.t.default", (w,))
    prim = Prim("aten.addmm.default", (x, HOLE, inner), (("beta", [Lit(1), x]),))
    assert list(children(prim)) == [x, inner, x]
    assert list(children(App(prim, x))) == [prim, x]
    assert list(children(w)) == []
