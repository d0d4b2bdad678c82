"""One group of tests per verifier rule (names, scope, operators, arity, types).

Each rule gets programs built in Python that pass and programs that fail. A failing program
built in Python is reported at `<program NAME>:1:1`; where it can be printed, its text is
parsed too and the error must point at the offending spot (line 7 is the first definition in
the printed layout: header, blank, input, blank, state, blank, definitions).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from bwsk.errors import BwskError, VerifyError
from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.ir.program import Definition, Input, Output, Program, State
from bwsk.ir.terms import HOLE, App, B, C, I, K, Prim, Ref, S, Term, W, apply
from bwsk.ir.types import FunctionType, ScalarType, TensorType, TupleType
from bwsk.ir.verifier import ArityChecker, ArityError, verify

T23 = TensorType(torch.float32, (2, 3))
T33 = TensorType(torch.float32, (3, 3))
X, Z = Ref("value", "x"), Ref("value", "z")
WEIGHT = Ref("state", "w")
RELU = Prim("aten.relu.default", (HOLE,))
EXP = Prim("aten.exp.default", (HOLE,))
ADD = Prim("aten.add.Tensor", (HOLE, HOLE))
SUB = Prim("aten.sub.Tensor", (HOLE, HOLE))


def program(*defs: Definition, inputs=(Input("x", T23),), state=(State("w", "param", T33),), outputs=()) -> Program:
    return Program("v", tuple(inputs), tuple(state), tuple(defs), tuple(outputs))


def define(name: str, term: Term, type_=None) -> Definition:
    return Definition(name, term, type_)


def out(name: str, type_=T23, kind: str = "value") -> Output:
    return Output(Ref(kind, name), type_)


@dataclass(frozen=True)
class Bad:
    name: str
    program: Program
    fragment: str
    parsed_at: str | None  # LINE:COL of the error in the printed text; None if the program cannot be printed


def check_rejected(bad: Bad) -> None:
    with pytest.raises(VerifyError) as info:
        verify(bad.program)
    message = str(info.value)
    assert message.startswith("<program v>:1:1: "), message
    assert bad.fragment in message
    assert "\n" not in message
    if bad.parsed_at is not None:
        with pytest.raises(BwskError) as parsed:
            parse(print_program(bad.program), "v.bwsk")
        assert str(parsed.value).startswith(f"v.bwsk:{bad.parsed_at}: "), str(parsed.value)
        assert bad.fragment in str(parsed.value)


def check_accepted(good: Program) -> None:
    assert verify(good) is good
    assert parse(print_program(good)) == good


# ---- names: well formed, each declared once ---------------------------------------------------

NAMES_OK = [
    program(
        define("layer.0.out", App(RELU, X)), inputs=[Input("0", T23), Input("x", T23)], state=[State("blocks.0.weight", "buffer", T33)]
    ),
    program(state=[State("a", "param", T33), State("b", "buffer", T33), State("c", "const", ScalarType("int"))]),
]

NAMES_BAD = [
    Bad("input-with-space", program(inputs=[Input("a b", T23)]), "malformed name 'a b'", None),
    Bad("state-with-symbol", program(state=[State("w!", "param", T33)]), "malformed name 'w!'", None),
    Bad("empty-definition-name", program(define("", App(RELU, X))), "malformed name ''", None),
    Bad("trailing-dot", program(define("a.", App(RELU, X))), "malformed name 'a.'", None),
    Bad("input-twice", program(inputs=[Input("x", T23), Input("x", T33)]), "input %x is declared twice", "4:7"),
    Bad("state-twice", program(state=[State("w", "param", T33), State("w", "buffer", T33)]), "@w is declared twice", "6:8"),
    Bad(
        "definition-twice",
        program(define("y", App(RELU, X)), define("y", App(EXP, X))),
        "duplicate definition: %y is already defined above",
        "8:1",
    ),
    Bad("definition-named-like-input", program(define("x", App(RELU, X))), "duplicate definition: %x is already an input", "7:1"),
    Bad("unknown-state-kind", program(state=[State("w", "variable", T33)]), "@w has unknown kind 'variable'", None),
]


@pytest.mark.parametrize("good", NAMES_OK, ids=["dotted-and-numeric", "every-state-kind"])
def test_names_rule_accepts_well_formed_unique_names(good: Program) -> None:
    check_accepted(good)


@pytest.mark.parametrize("bad", NAMES_BAD, ids=lambda b: b.name)
def test_names_rule_rejects(bad: Bad) -> None:
    check_rejected(bad)


def test_values_and_state_are_separate_namespaces() -> None:
    check_accepted(
        program(define("w", apply(ADD, X, WEIGHT)), state=[State("w", "param", T23)], outputs=[out("w"), out("w", kind="state")])
    )


# ---- scope: %names defined above their use, @names declared ------------------------------------

SCOPE_OK = program(
    define("a", apply(ADD, X, WEIGHT)),
    define("b", Prim("aten.mul.Tensor", (Ref("value", "a"), X))),
    outputs=[out("b"), out("x"), out("w", T33, "state")],
)

SCOPE_BAD = [
    Bad("undefined-name", program(define("y", App(RELU, Z))), "undefined name: %z", "7:27"),
    Bad(
        "use-before-definition",
        program(define("y", Prim("aten.relu.default", (Z,))), define("z", App(EXP, X))),
        "used before its definition: %z",
        "7:24",
    ),
    Bad("self-reference", program(define("y", apply(ADD, X, Ref("value", "y")))), "used before its definition: %y", "7:31"),
    Bad("undeclared-state", program(define("y", apply(ADD, X, Ref("state", "v")))), "undeclared state: @v", "7:31"),
    Bad("state-used-as-value", program(define("y", apply(ADD, X, Ref("value", "w")))), "undefined name: %w", "7:31"),
    Bad("output-undefined", program(outputs=[out("z")]), "undefined name: %z", "7:8"),
    Bad("output-undeclared-state", program(outputs=[out("v", kind="state")]), "undeclared state: @v", "7:8"),
]


def test_scope_rule_accepts_references_to_inputs_earlier_definitions_and_state() -> None:
    check_accepted(SCOPE_OK)


@pytest.mark.parametrize("bad", SCOPE_BAD, ids=lambda b: b.name)
def test_scope_rule_rejects(bad: Bad) -> None:
    check_rejected(bad)


# ---- operators: known overloads whose schema fits the template ---------------------------------

OPERATORS_OK = program(
    define("m", Prim("aten.max.dim", (X, 1, False))),
    define("v", Prim("operator.getitem", (Ref("value", "m"), 0))),
    define("s", Prim("aten.sum.dim_IntList", (X, [1]), (("keepdim", True), ("dtype", torch.float64)))),
    define("c", Prim("aten.cat.default", ([X, X],), (("dim", 0),))),
)

OPERATORS_BAD = [
    Bad("unknown-overload", program(define("y", Prim("aten.relu.nonexistent", (X,)))), "unknown operator 'aten.relu.nonexistent'", "7:6"),
    Bad("not-a-torch-op", program(define("y", Prim("os.system", ("ls",)))), "unknown operator 'os.system'", "7:6"),
    Bad(
        "too-many-positional",
        program(define("y", Prim("aten.relu.default", (X, X)))),
        "aten.relu.default takes at most 1 positional argument(s), got 2",
        "7:6",
    ),
    Bad(
        "unknown-keyword",
        program(define("y", Prim("aten.add.Tensor", (X, X), (("beta", 2),)))),
        "aten.add.Tensor has no argument named 'beta'",
        "7:6",
    ),
    Bad(
        "bad-embedded-operator",
        program(define("y", Prim("aten.add.Tensor", (X, Prim("aten.t.default", (WEIGHT, 0)))))),
        "aten.t.default takes at most 1 positional argument(s), got 2",
        "7:26",
    ),
]


def test_operators_rule_accepts_schema_conforming_templates() -> None:
    check_accepted(OPERATORS_OK)


@pytest.mark.parametrize("bad", OPERATORS_BAD, ids=lambda b: b.name)
def test_operators_rule_rejects(bad: Bad) -> None:
    check_rejected(bad)


# ---- arity: everything reduces to saturated primitive calls on first-order values --------------

F = Ref("value", "f")
ARITY_OK = program(
    define("f", apply(C, SUB)),  # arity 2
    define("g", App(F, X)),  # a partial application: arity 1
    define("h", apply(S, ADD, Ref("value", "g"))),  # S add g : arity 1
    define("y", apply(Ref("value", "h"), X)),
    define("k", apply(K, X, RELU)),  # K may drop a function
    define("i", apply(S, K, K, X)),
    define("e", Prim("aten.add.Tensor", (X, apply(B, RELU, EXP, X)))),  # an embedded value
    outputs=[out("y"), out("k"), out("i"), out("e")],
)

ARITY_BAD = [
    Bad(
        "primitive-over-applied",
        program(define("y", apply(RELU, X, X))),
        "in %y: aten.relu.default takes 1 argument(s) but is applied to 2",
        "7:6",
    ),
    Bad("value-applied", program(define("y", apply(X, X))), "%x takes 0 argument(s) but is applied to 1", "7:6"),
    Bad(
        "definition-over-applied",
        program(define("f", RELU), define("y", apply(F, X, X))),
        "in %y: %f takes 1 argument(s) but is applied to 2",
        "8:6",
    ),
    Bad(
        "function-as-argument",
        program(define("y", apply(ADD, X, RELU))),
        "aten.add.Tensor is given a function (arity 1) where a value is expected",
        "7:6",
    ),
    Bad(
        "function-embedded",
        program(define("y", Prim("aten.relu.default", (EXP,)))),
        "an argument embedded in aten.relu.default is a function, not a value",
        "7:6",
    ),
    Bad(
        "higher-order-parameter",
        program(define("f", App(B, RELU))),
        "a function is expected where a value stands (higher-order use is not allowed)",
        "7:1",
    ),
    Bad("W-of-unary", program(define("f", App(W, RELU))), "aten.relu.default takes 1 argument(s) but is applied to 2", "7:8"),
    Bad(
        "K-drops-ill-formed-argument",
        program(define("y", apply(K, X, apply(RELU, X, X)))),
        "aten.relu.default takes 1 argument(s) but is applied to 2",
        "7:12",
    ),
    Bad("K-drops-higher-order-use", program(define("f", App(B, App(K, X)))), "higher-order use is not allowed", "7:1"),
    Bad("non-normalising", program(define("y", apply(S, I, I, apply(S, I, I)))), "in %y: does not normalise", "7:8"),
]


def test_arity_rule_accepts_saturated_first_order_reductions() -> None:
    check_accepted(ARITY_OK)


@pytest.mark.parametrize("bad", ARITY_BAD, ids=lambda b: b.name)
def test_arity_rule_rejects(bad: Bad) -> None:
    check_rejected(bad)


@pytest.mark.parametrize(
    ("term", "arity"),
    [
        (I, 1),
        (K, 2),
        (apply(S, K, K), 1),
        (App(C, SUB), 2),
        (App(W, ADD), 1),
        (apply(B, RELU, EXP), 1),
        (App(K, SUB), 3),
        (apply(S, ADD, RELU, X), 0),
    ],
    ids=str,
)
def test_arity_checker_computes_arities(term: Term, arity: int) -> None:
    assert ArityChecker(lambda ref: 0).arity(term) == arity


@pytest.mark.parametrize("term", [S, B, C, W, App(S, ADD), App(B, RELU), App(C, I)], ids=str)
def test_arity_checker_rejects_higher_order_parameters(term: Term) -> None:
    # S, B, C and W apply a parameter to arguments: unapplied, that parameter would be a function.
    with pytest.raises(ArityError, match="higher-order use is not allowed"):
        ArityChecker(lambda ref: 0).arity(term)


def test_arity_checker_uses_the_arity_of_references() -> None:
    checker = ArityChecker(lambda ref: 2 if ref.name == "f" else 0)
    assert checker.arity(F) == 2
    assert checker.arity(App(F, X)) == 1
    with pytest.raises(ArityError, match="%f takes 2 argument"):
        checker.arity(apply(F, X, X, X))


def test_reduction_budget_is_per_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    import bwsk.ir.verifier

    monkeypatch.setattr(bwsk.ir.verifier, "_FUEL", 50)
    # Many cheap definitions in a chain do not add up to a program-wide budget...
    verify(program(*(define(f"d{i}", App(I, Ref("value", f"d{i - 1}" if i else "x"))) for i in range(200))))
    # ...while one definition that needs more than the budget is refused.
    deep = X
    for _ in range(60):
        deep = App(I, deep)
    with pytest.raises(VerifyError, match="does not normalise"):
        verify(program(define("y", deep)))


# ---- types: declared arities match, inputs and outputs are values of the declared type ---------

FN1 = FunctionType((T23,), T23)
TYPES_OK = program(
    define("f", RELU, FN1),
    define("g", ADD, FunctionType((T23, T23), T23)),
    define("y", App(F, X), T23),
    define("u", App(F, X)),  # undeclared: any output type is accepted
    define("p", Prim("aten.max.dim", (X, 1)), TupleType((TensorType(torch.float32, (2,)), TensorType(torch.int64, (2,))))),
    inputs=[Input("x", T23), Input("n", ScalarType("int"))],
    outputs=[out("y"), out("u", TensorType(torch.float16, ("batch",))), out("n", ScalarType("int")), out("w", T33, "state")],
)

TYPES_BAD = [
    Bad(
        "fn-type-too-many-params",
        program(define("f", RELU, FunctionType((T23, T23), T23))),
        "%f is declared fn(f32[2, 3], f32[2, 3]) -> f32[2, 3] (2 parameter(s)) but its term takes 1",
        "7:1",
    ),
    Bad("fn-type-on-a-value", program(define("y", App(RELU, X), FN1)), "(1 parameter(s)) but its term takes 0", "7:1"),
    Bad(
        "value-type-on-a-function", program(define("f", RELU, T23)), "%f is declared f32[2, 3] (0 parameter(s)) but its term takes 1", "7:1"
    ),
    Bad("input-of-function-type", program(inputs=[Input("x", FN1)]), "input %x has a function type; inputs are values", "3:7"),
    Bad(
        "output-of-function-type",
        program(define("y", App(RELU, X)), outputs=[out("y", FN1)]),
        "has a function type; outputs are values",
        "9:8",
    ),
    Bad("output-type-mismatch", program(outputs=[out("x", T33)]), "output declared f32[3, 3] but its source is f32[2, 3]", "7:8"),
    Bad(
        "output-dtype-mismatch",
        program(define("y", App(RELU, X), T23), outputs=[out("y", TensorType(torch.float16, (2, 3)))]),
        "output declared f16[2, 3] but its source is f32[2, 3]",
        "9:8",
    ),
    Bad("state-output-mismatch", program(outputs=[out("w", T23, "state")]), "output declared f32[2, 3] but its source is f32[3, 3]", "7:8"),
    Bad("output-of-a-function", program(define("f", RELU), outputs=[out("f")]), "output %f is a function (arity 1), not a value", "9:8"),
]


def test_types_rule_accepts_matching_declarations() -> None:
    check_accepted(TYPES_OK)


@pytest.mark.parametrize("bad", TYPES_BAD, ids=lambda b: b.name)
def test_types_rule_rejects(bad: Bad) -> None:
    check_rejected(bad)


def test_verifier_documents_each_rule_tested_here() -> None:
    import bwsk.ir.verifier

    doc = bwsk.ir.verifier.__doc__
    for rule in ("names", "scope", "operators", "arity", "types"):
        assert f"\n  {rule} " in doc
