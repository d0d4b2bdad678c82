"""The evaluator: combinator rules on tensors, closures, sharing, the examples against plain torch, errors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping

import pytest
import torch
import torch.nn.functional as F
from paths import EXAMPLES
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode

from bwsk.ir.evaluator import Closure, EvaluationError, evaluate, evaluate_term
from bwsk.ir.parser import parse
from bwsk.ir.terms import HOLE, App, B, C, I, K, Prim, Ref, S, W, apply

SUB = Prim("aten.sub.Tensor", (HOLE, HOLE))
SIN = Prim("aten.sin.default", (HOLE,))
EXP = Prim("aten.exp.default", (HOLE,))
MUL = Prim("aten.mul.Tensor", (HOLE, HOLE))
LERP = Prim("aten.lerp.Tensor", (HOLE, HOLE, HOLE))


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def rand(rng: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=rng)


class CountOps(TorchDispatchMode):
    """Counts the ATen overloads dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


class CountingParams(Mapping):
    """A params mapping that counts how often each state tensor is read."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.reads: Counter[str] = Counter()

    def __getitem__(self, name: str) -> torch.Tensor:
        self.reads[name] += 1
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


# ---- each combinator against its rule --------------------------------------------------------


def test_S_applies_f_to_x_and_g_x(rng: torch.Generator) -> None:
    x = rand(rng, 5)
    assert_close(evaluate_term(apply(S, SUB, SIN), x), x - torch.sin(x), rtol=0, atol=0)


def test_K_returns_its_first_argument(rng: torch.Generator) -> None:
    x, y = rand(rng, 5), rand(rng, 5)
    assert evaluate_term(K, x, y) is x
    assert evaluate_term(apply(K, Ref("value", "a")), y, values={"a": x}) is x


def test_B_composes_right_to_left(rng: torch.Generator) -> None:
    x = rand(rng, 5)
    assert_close(evaluate_term(apply(B, SIN, EXP), x), torch.sin(torch.exp(x)), rtol=0, atol=0)
    assert not torch.allclose(evaluate_term(apply(B, EXP, SIN), x), torch.sin(torch.exp(x)))


def test_C_flips_the_arguments(rng: torch.Generator) -> None:
    x, y = rand(rng, 5), rand(rng, 5)
    assert_close(evaluate_term(App(C, SUB), x, y), y - x, rtol=0, atol=0)
    assert_close(evaluate_term(SUB, x, y), x - y, rtol=0, atol=0)


def test_W_duplicates_the_argument(rng: torch.Generator) -> None:
    x, w = rand(rng, 5), rand(rng, 5)
    assert_close(evaluate_term(App(W, MUL), x), x * x, rtol=0, atol=0)
    # W (lerp _ _ w) x = lerp(x, x, w) = x for every weight.
    lerp_w = Prim("aten.lerp.Tensor", (HOLE, HOLE, Ref("value", "w")))
    assert_close(evaluate_term(App(W, lerp_w), x, values={"w": w}), x)


def test_I_returns_its_argument(rng: torch.Generator) -> None:
    x = rand(rng, 5)
    assert evaluate_term(I, x) is x


def test_primitive_holes_fill_left_to_right_positional_then_keywords(rng: torch.Generator) -> None:
    a, b, c = rand(rng, 4), rand(rng, 4), rand(rng, 4)
    assert_close(evaluate_term(LERP, a, b, c), torch.lerp(a, b, c), rtol=0, atol=0)
    addcmul = Prim("aten.addcmul.default", (HOLE, HOLE, HOLE), (("value", HOLE),))
    assert_close(evaluate_term(addcmul, a, b, c, 3.0), torch.addcmul(a, b, c, value=3.0), rtol=0, atol=0)
    cat = Prim("aten.cat.default", ([HOLE, Ref("value", "m"), HOLE], HOLE))
    assert_close(evaluate_term(cat, a, b, 0, values={"m": c}), torch.cat([a, c, b], 0), rtol=0, atol=0)


# ---- partial application and closures --------------------------------------------------------


def test_partial_application_is_a_closure_until_saturated(rng: torch.Generator) -> None:
    x, y, z = rand(rng, 3), rand(rng, 3), rand(rng, 3)
    partial = evaluate_term(LERP, x, y)
    assert isinstance(partial, Closure) and partial.args == (x, y)
    waiting = evaluate_term(apply(S, LERP), x)
    assert isinstance(waiting, Closure) and waiting.head is S
    assert isinstance(evaluate_term(apply(S, LERP, SIN), x), Closure)  # S lerp sin x = lerp x (sin x): one more to go
    assert_close(evaluate_term(apply(S, LERP, SIN), x, z), torch.lerp(x, torch.sin(x), z), rtol=0, atol=0)
    # Over-application: C f x y with f returning a function is applied to the rest in turn.
    assert_close(evaluate_term(apply(C, LERP), x, y, z), torch.lerp(y, x, z), rtol=0, atol=0)


def test_definitions_may_be_closures_used_later(rng: torch.Generator) -> None:
    program = parse(
        """program "closures"
input %a : f32[3]
input %b : f32[3]
%minus_a : fn(f32[3]) -> f32[3] = aten.sub.Tensor(_, _) %a
%flip : fn(f32[3], f32[3]) -> f32[3] = C aten.sub.Tensor(_, _)
%twice : fn(f32[3]) -> f32[3] = B %minus_a %minus_a
%r1 = %minus_a %b
%r2 = %flip %a %b
%r3 = %twice %b
output %r1 : f32[3], %r2 : f32[3], %r3 : f32[3]
"""
    )
    a, b = rand(rng, 3), rand(rng, 3)
    r1, r2, r3 = program(a, b)
    assert_close(r1, a - b, rtol=0, atol=0)
    assert_close(r2, b - a, rtol=0, atol=0)
    assert_close(r3, a - (a - b), rtol=0, atol=0)


# ---- sharing: each definition is evaluated once per call ---------------------------------------

SHARED = """program "shared"
input %x : f32[4]
param @w : f32[4]
%e = aten.exp.default(aten.mul.Tensor(%x, @w))
%s = S aten.sub.Tensor(_, _) aten.sin.default(_) %e
%t = W aten.mul.Tensor(_, _) %e
%y = aten.add.Tensor(%s, %t)
output %y : f32[4], %e : f32[4]
"""


def test_each_definition_is_evaluated_once_per_call(rng: torch.Generator) -> None:
    program = parse(SHARED)
    x, w = rand(rng, 4), rand(rng, 4)
    with CountOps() as ops:
        y, e = program(x, params={"w": w})
    expected_e = torch.exp(x * w)
    assert_close(e, expected_e, rtol=0, atol=0)
    assert_close(y, (expected_e - torch.sin(expected_e)) + expected_e * expected_e, rtol=0, atol=0)
    # %e is used four times (by S, by W, and as an output) but computed once; S and W share their argument.
    assert ops.counts == Counter(
        {"aten.exp.default": 1, "aten.mul.Tensor": 2, "aten.sin.default": 1, "aten.sub.Tensor": 1, "aten.add.Tensor": 1}
    )
    with CountOps() as again:
        program(x, params={"w": w})
        program(x, params={"w": w})
    assert again.counts == Counter({name: 2 * n for name, n in ops.counts.items()})


def test_state_is_read_once_per_use_site_per_call(rng: torch.Generator) -> None:
    program = parse(SHARED)
    params = CountingParams({"w": rand(rng, 4)})
    program(rand(rng, 4), params=params)
    assert params.reads == Counter({"w": 1})
    program(rand(rng, 4), params=params)
    assert params.reads == Counter({"w": 2})


# ---- the examples against plain torch --------------------------------------------------------


def load(name: str):
    return parse((EXAMPLES / f"{name}.bwsk").read_text(), f"{name}.bwsk")


def test_mlp_example_matches_torch(rng: torch.Generator) -> None:
    p = {"fc1.weight": rand(rng, 32, 16), "fc1.bias": rand(rng, 32), "fc2.weight": rand(rng, 8, 32), "fc2.bias": rand(rng, 8)}
    x = rand(rng, 5, 16)
    expected = F.linear(torch.relu(F.linear(x, p["fc1.weight"], p["fc1.bias"])), p["fc2.weight"], p["fc2.bias"])
    assert_close(load("mlp")(x, params=p), expected)


def test_residual_example_matches_torch(rng: torch.Generator) -> None:
    p = {"fc1.weight": rand(rng, 64, 16), "fc1.bias": rand(rng, 64), "fc2.weight": rand(rng, 16, 64), "fc2.bias": rand(rng, 16)}
    x = rand(rng, 3, 16)
    branch = F.linear(torch.relu(F.linear(x, p["fc1.weight"], p["fc1.bias"])), p["fc2.weight"], p["fc2.bias"])
    assert_close(load("residual")(x, params=p), x + branch)


def test_tied_example_matches_torch(rng: torch.Generator) -> None:
    wte = rand(rng, 100, 16)
    ids = torch.randint(0, 100, (2, 8), generator=rng)
    hidden = F.embedding(ids, wte) ** 2
    expected = hidden.reshape(-1, 16) @ wte.t()
    logits = load("tied")(ids, params={"wte.weight": wte})
    assert logits.shape == (16, 100)
    assert_close(logits, expected)


def test_examples_depend_on_their_parameters(rng: torch.Generator) -> None:
    p = {"fc1.weight": rand(rng, 64, 16), "fc1.bias": rand(rng, 64), "fc2.weight": rand(rng, 16, 64), "fc2.bias": rand(rng, 16)}
    x = rand(rng, 3, 16)
    changed = dict(p, **{"fc2.bias": p["fc2.bias"] + 1})
    assert_close(load("residual")(x, params=changed) - load("residual")(x, params=p), torch.ones(3, 16))


# ---- outputs and errors ----------------------------------------------------------------------


def test_multiple_outputs_return_a_tuple_and_one_output_returns_itself(rng: torch.Generator) -> None:
    x, w = rand(rng, 4), rand(rng, 4)
    result = parse(SHARED)(x, params={"w": w})
    assert isinstance(result, tuple) and len(result) == 2
    single = parse('program "one"\ninput %x : f32[4]\noutput %x : f32[4]\n')(x)
    assert single is x
    assert parse('program "none"\ninput %x : f32[4]\n')(x) == ()


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_wrong_input_count_is_an_evaluation_error(rng: torch.Generator) -> None:
    with pytest.raises(EvaluationError) as info:
        parse(SHARED)(params={"w": rand(rng, 4)})
    assert one_line_error(info) == "program 'shared' takes 1 input(s), got 0"
    with pytest.raises(EvaluationError, match="takes 1 input"):
        parse(SHARED)(rand(rng, 4), rand(rng, 4), params={"w": rand(rng, 4)})


def test_missing_param_is_an_evaluation_error(rng: torch.Generator) -> None:
    with pytest.raises(EvaluationError) as info:
        parse(SHARED)(rand(rng, 4))
    assert one_line_error(info) == "no value given for state @w (pass it in params=)"


def test_operator_failure_is_a_one_line_evaluation_error(rng: torch.Generator) -> None:
    program = parse('program "bad"\ninput %a : f32[2, 3]\n%y = aten.mm.default(%a, %a)\noutput %y : f32[2, 3]\n')
    with pytest.raises(EvaluationError) as info:
        program(rand(rng, 2, 3))
    assert one_line_error(info).startswith("aten.mm.default failed: ")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_applying_a_value_is_an_evaluation_error(rng: torch.Generator) -> None:
    with pytest.raises(EvaluationError) as info:
        evaluate_term(App(Ref("value", "a"), Ref("value", "a")), values={"a": rand(rng, 2)})
    assert one_line_error(info) == "a Tensor value is applied to an argument"


# ---- the evaluation device -------------------------------------------------------------------

BIG = "[20000, 20000]"  # 1.6 GB in f32, were it allocated
CONSTRUCTORS = {
    "no-device": f"aten.ones.default({BIG})",
    "device-literal": f'aten.full.default({BIG}, 1.0, device=device("cpu"))',
    "device-string": f'aten.empty.memory_format({BIG}, device="cpu")',
    "positional-device": f'aten.to.device(aten.zeros.default({BIG}), "cpu", f32)',
    "prims": f'prims.full.default({BIG}, 1.0, dtype=f32, device=device("cpu"), requires_grad=false)',
    "like-an-input": f"aten.new_ones.default(%x, {BIG})",
}


@pytest.mark.parametrize("term", CONSTRUCTORS.values(), ids=CONSTRUCTORS.keys())
def test_every_device_argument_becomes_the_evaluation_device(term: str) -> None:
    """However a constructor names its device (or does not), on "meta" it allocates nothing; on the CPU it runs there."""
    program = parse(f'program "c"\ninput %x : f32[2]\n%c = {term}\noutput %c : f32[20000, 20000]\n', verify=False)
    on_meta = evaluate(program, [torch.empty(2, device="meta")], {}, device=torch.device("meta"))
    assert on_meta.device.type == "meta" and on_meta.shape == (20000, 20000)
    small = parse(f'program "c"\ninput %x : f32[2]\n%c = {term.replace(BIG, "[2, 3]")}\noutput %c : f32[2, 3]\n', verify=False)
    on_cpu = evaluate(small, [torch.empty(2, device="meta")], {}, device=torch.device("cpu"))
    assert on_cpu.device.type == "cpu" and on_cpu.shape == (2, 3)
