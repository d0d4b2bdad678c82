"""Calls whose operands share an ancestor: the per-call verdict made sound for a whole S-phase.

The claim. An S-phase is injective in each activation input, the phase's other
inputs held fixed: its outputs determine that input (`phase_check` tests this
numerically). The per-call rule judges a call in one operand with the others
held fixed, and that composes along chains and fan-outs: every step back from
an output is determined by the step after it. It does not compose where two
operands of one call are computed from the same value through S calls: in
x * sigmoid(x) both operands move with x, and the composite erases
(silu(-0.5) = silu(-2.5088)). So, walking calls in execution order, every S
call is checked for two activation operands with a common root, a root being a
program input or the output of a K call (the S-region's sources):

- calls that keep their operands apart (`cat`, `stack`) are exempt: their output
  contains each operand, so the fan-out argument still holds;
- a composite proved injective as a whole keeps (or gets) S for all its calls:
  the rotary embedding q*cos + rotate_half(q)*sin (each pair (q[i], q[i+d/2])
  is rotated by one angle, though `mul` by sin and the slices of rotate_half are
  K alone), and x + c*x^k for odd k and c >= 0 (strictly increasing);
- any other such call becomes K, with the shared ancestor named and, for the
  usual composites (SiLU, GELU's tanh form, x*x, x - x, x @ x.T), a witness.

The check uses roots reached through S calls only, a superset of the
ancestors inside any one phase, so it holds whatever phases `partition` forms;
the members of an injective composite are kept in one phase by `partition`.
A decomposed RMSNorm or LayerNorm needs no rule here: its `mean` is K (it keeps
one number of a row), so the norm as a whole is reported as erasing there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bwsk.ir.types import TensorType
from bwsk.passes.analysis import Classification
from bwsk.passes.classify.rules import GETITEM
from bwsk.passes.dataflow import Call, Dataflow

APART = frozenset({"aten.cat.default", "aten.stack.default", GETITEM})
# Steps that keep the last dim's elements in place (no reshape), so halves of an angle stay halves.
_CHAIN = frozenset({"aten.unsqueeze.default", "aten.expand.default", "aten._to_copy.default", "aten.to.dtype", "aten.clone.default"})
_MATMULS = frozenset({"aten.mm.default", "aten.bmm.default", "aten.matmul.default"})
_TRANSPOSES = frozenset({"aten.t.default", "aten.transpose.int", "aten.permute.default"})


@dataclass(frozen=True)
class Composite:
    """Calls proved injective as a whole: `head` computes the result, the other members feed only each other."""

    name: str
    head: int
    members: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class Witness:
    """Two inputs a composite maps to the same output: `formula(a) == formula(b)`."""

    label: str
    formula: Callable[[torch.Tensor], torch.Tensor]
    a: float
    b: float

    def text(self) -> str:
        return f"{self.label}({self.a:g}) = {self.label}({self.b:g})"


SILU = Witness("silu", lambda x: x * torch.sigmoid(x), -0.5, -2.5088072714221807)
GELU_TANH = Witness(
    "gelu_tanh", lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))), -0.5, -1.0509125839469626
)
SQUARE = Witness("square", lambda x: x * x, -1.0, 1.0)


def producer(flow: Dataflow, value: int) -> Call | None:
    index = flow.values[value].producer
    return None if index is None else flow.calls[index]


def value_name(flow: Dataflow, value: int) -> str:
    """A value as the IR text names it: its source, or the definition whose body computed it."""
    found = flow.values[value]
    if found.source is not None:
        return found.source
    call = flow.calls[found.producer]
    last = call.index + 1 == len(flow.calls) or flow.calls[call.index + 1].scope != call.scope
    return f"%{call.scope}" if last else f"%{call.scope} ({call.target})"


def _strip(flow: Dataflow, value: int) -> tuple[int, tuple]:
    """Follow shape changes, casts and multiplications by a nonzero constant up to the value they start from."""
    steps = []
    while (call := producer(flow, value)) is not None:
        scalar_mul = call.target in ("aten.mul.Tensor", "aten.mul.Scalar") and len(call.inputs) == 1 and call.args[1] not in (0, 0.0)
        if not (call.target in _CHAIN or scalar_mul) or call.operand_positions[0] != 0:
            break
        steps.append((call.target, call.args[1:], tuple(sorted(call.kwargs.items(), key=str))))
        value = call.inputs[0]
    return value, tuple(steps)


def _single_use(flow: Dataflow, users: dict[int, list[int]], calls: list[Call], inside: set[int]) -> bool:
    return all(flow.outputs.count(c.output) == 0 and set(users[c.output]) <= inside for c in calls)


def _is_slice(call: Call | None, source: int, start: int, end: int | None, rank: int) -> bool:
    """`call` is slice(source, last dim, start, end (or to the end), step 1)."""
    if call is None or call.target != "aten.slice.Tensor" or call.inputs != (source,):
        return False
    given = list(call.args[1:5])
    dim, lo, hi, step = given + [0, None, None, 1][len(given) :]
    if dim % rank != rank - 1 or (lo or 0) != start or step != 1:
        return False
    return hi == end if end is not None else hi is None or hi >= call.args[0].shape[-1]


def rotary(flow: Dataflow, users: dict[int, list[int]], add: Call) -> Composite | None:
    """`add(q*cos, rotate_half(q)*sin)`, rotate_half(q) = cat(-q[..., h:], q[..., :h]), cos and sin of one angle with equal halves."""
    if add.target != "aten.add.Tensor" or len(add.inputs) != 2 or add.args[2:] not in ((), (1,)) or add.kwargs.get("alpha", 1) != 1:
        return None
    for first, second in ((0, 1), (1, 0)):
        muls = [producer(flow, add.inputs[first]), producer(flow, add.inputs[second])]
        if any(m is None or m.target != "aten.mul.Tensor" or len(m.inputs) != 2 for m in muls):
            continue
        for (q, cos), (rotated, sin) in ((a, b) for a in _pairs(muls[0]) for b in _pairs(muls[1])):
            cat = producer(flow, rotated)
            if cat is None or cat.target != "aten.cat.default" or len(cat.inputs) != 2:
                continue
            rank = len(cat.args[0][0].shape)
            neg, low = producer(flow, cat.inputs[0]), producer(flow, cat.inputs[1])
            q_type = flow.values[q].type
            width = q_type.shape[-1] if isinstance(q_type, TensorType) and q_type.shape else None
            if (
                neg is None
                or neg.target != "aten.neg.default"
                or not isinstance(width, int)
                or width % 2
                or cat.args[1:2] not in ((-1,), (rank - 1,))
            ):
                continue
            high = producer(flow, neg.inputs[0])
            half = width // 2
            if not (_is_slice(high, q, half, None, rank) and _is_slice(low, q, 0, half, rank)):
                continue
            if not _same_angle(flow, cos, sin, width) or _depends_on(flow, cos, q) or _depends_on(flow, sin, q):
                continue
            members = [high, low, neg, cat, muls[0], muls[1]]
            if not _single_use(flow, users, members, {m.index for m in members} | {add.index}):
                continue
            reason = (
                f"rotary embedding {value_name(flow, q)}*cos + rotate_half({value_name(flow, q)})*sin rotates each pair "
                f"(q[i], q[i+{half}]) by one angle (cos and sin of one angle tensor whose halves are equal): injective as a whole"
            )
            return Composite("rotary", add.index, tuple(sorted(m.index for m in [*members, add])), reason)
    return None


def _pairs(mul: Call) -> list[tuple[int, int]]:
    return [(mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])]


def _depends_on(flow: Dataflow, value: int, ancestor: int) -> bool:
    """Is `value` computed (through any calls) from `ancestor`? Values made without activations never are."""
    if not flow.values[value].activation:
        return False
    seen, stack = {value}, [value]
    while stack:
        current = stack.pop()
        if current == ancestor:
            return True
        call = producer(flow, current)
        for v in call.inputs if call is not None else ():
            if v not in seen and flow.values[v].activation:
                seen.add(v)
                stack.append(v)
    return False


def _last_dim(flow: Dataflow, value: int) -> int | None:
    type_ = flow.values[value].type
    return type_.shape[-1] if isinstance(type_, TensorType) and type_.shape else None


def _same_angle(flow: Dataflow, cos: int, sin: int, width: int) -> bool:
    """cos and sin come, by the same broadcasts, casts and scaling, from cos(t) and sin(t) of one t = cat([f, f], -1), all `width` wide."""
    if _last_dim(flow, cos) != width or _last_dim(flow, sin) != width:
        return False
    (cos_base, cos_steps), (sin_base, sin_steps) = _strip(flow, cos), _strip(flow, sin)
    c, s = producer(flow, cos_base), producer(flow, sin_base)
    if c is None or s is None or (c.target, s.target) != ("aten.cos.default", "aten.sin.default") or cos_steps != sin_steps:
        return False
    if c.inputs != s.inputs or len(c.inputs) != 1:
        return False
    angle = producer(flow, c.inputs[0])
    if angle is None or angle.target != "aten.cat.default" or len(angle.inputs) != 2 or angle.inputs[0] != angle.inputs[1]:
        return False
    if _last_dim(flow, angle.output) != width:
        return False
    return angle.args[1:2] in ((-1,), (len(angle.args[0][0].shape) - 1,))


def odd_polynomial(flow: Dataflow, users: dict[int, list[int]], add: Call) -> Composite | None:
    """`add(x, mul(pow(x, k), c))` with odd integer k and c >= 0: strictly increasing, so injective."""
    if add.target != "aten.add.Tensor" or len(add.inputs) != 2 or add.kwargs.get("alpha", 1) != 1 or add.args[2:] not in ((), (1,)):
        return None
    for x, term in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
        scale = producer(flow, term)
        if scale is None or scale.target != "aten.mul.Tensor" or len(scale.inputs) != 1 or not isinstance(scale.args[1], (int, float)):
            continue
        power = producer(flow, scale.inputs[0])
        if power is None or power.target != "aten.pow.Tensor_Scalar" or power.inputs != (x,):
            continue
        k, c = power.args[1], scale.args[1]
        if (
            float(k).is_integer()
            and int(k) % 2 == 1
            and c >= 0
            and _single_use(flow, users, [power, scale], {power.index, scale.index, add.index})
        ):
            reason = f"{value_name(flow, x)} + {c:g}*{value_name(flow, x)}^{int(k)} is strictly increasing (odd power, nonnegative factor): injective"
            return Composite("odd polynomial", add.index, (power.index, scale.index, add.index), reason)
    return None


def find_composites(flow: Dataflow) -> list[Composite]:
    """Every injective composite the recognizers prove, one per head call."""
    users = flow.users()
    found = []
    for call in flow.calls:
        composite = rotary(flow, users, call) or odd_polynomial(flow, users, call)
        if composite is not None:
            found.append(composite)
    return found


def _ancestors(flow: Dataflow, value: int, classes: dict[int, Classification]) -> set[int]:
    """`value` and every value it is computed from through S calls."""
    seen, stack = {value}, [value]
    while stack:
        call = producer(flow, stack.pop())
        if call is None or classes[call.index].kind != "S":
            continue
        for v in call.inputs:
            if flow.values[v].activation and v not in seen:
                seen.add(v)
                stack.append(v)
    return seen


def _reaches(flow: Dataflow, value: int, target: str, steps: int = 8) -> bool:
    """`value` is computed by `target` within a few calls (following first activation operands)."""
    for _ in range(steps):
        call = producer(flow, value)
        if call is None:
            return False
        if call.target == target:
            return True
        active = [v for v in call.inputs if flow.values[v].activation]
        if not active:
            return False
        value = active[0]
    return False


def shared_reason(flow: Dataflow, call: Call, a: int, b: int, classes: dict[int, Classification]) -> str:
    """Why a call with operands `a` and `b` computed from one value is K, naming that value (and a witness if the composite is known)."""
    common = _ancestors(flow, a, classes) & _ancestors(flow, b, classes)
    nearest = max(common, key=lambda v: (flow.values[v].producer if flow.values[v].producer is not None else -1, v))
    name = value_name(flow, nearest)
    prefix = f"operands share ancestor {name}: "
    pa, pb = producer(flow, a), producer(flow, b)
    if a == b and call.target in ("aten.sub.Tensor", "aten.sub.Scalar"):
        return prefix + "x - x is always 0"
    if a == b and call.target == "aten.mul.Tensor":
        return prefix + f"x*x is not injective ({SQUARE.text()})"
    if call.target == "aten.mul.Tensor" and any(
        p is not None and p.target == "aten.sigmoid.default" and p.inputs[0] == o for p, o in ((pb, a), (pa, b))
    ):
        return prefix + f"x*sigmoid(x) is not injective ({SILU.text()})"
    if call.target == "aten.mul.Tensor" and (_reaches(flow, a, "aten.tanh.default") or _reaches(flow, b, "aten.tanh.default")):
        return prefix + f"x*(1 + tanh(...x...)) (GELU, tanh form) is not injective ({GELU_TANH.text()})"
    if call.target in _MATMULS and any(p is not None and p.target in _TRANSPOSES and p.inputs[0] == o for p, o in ((pb, a), (pa, b))):
        return prefix + "x @ x.T is unchanged by x -> x Q for any orthogonal Q"
    return prefix + f"{call.target}(f(x), g(x)) is not injective in general (each operand is injective only with the other held fixed)"


def judge_composites(flow: Dataflow, classes: dict[int, Classification]) -> tuple[dict[int, Classification], list[Composite]]:
    """Verdicts made sound for whole phases (see the module docstring), and the injective composites found."""
    composites = find_composites(flow)
    updated = dict(classes)
    heads = {}
    for composite in composites:
        heads[composite.head] = composite
        for index in composite.members:
            updated[index] = Classification("S", composite.reason, None, classes[index].operand)
    roots: dict[int, int] = {}  # value id -> bitset of S-region sources it is computed from
    bits: dict[int, int] = {}

    def root(value: int) -> int:
        return 1 << bits.setdefault(value, len(bits))

    for value in flow.values.values():
        if value.producer is None and value.activation:
            roots[value.id] = root(value.id)
    for call in flow.calls:
        active = [call.inputs[i] for i in flow.activation_operands(call)]
        if not active:
            continue
        if updated[call.index].kind == "S" and call.target not in APART and call.index not in heads:
            clash = next(((a, b) for i, a in enumerate(active) for b in active[i + 1 :] if roots[a] & roots[b]), None)
            if clash is not None:
                reason = shared_reason(flow, call, *clash, updated)
                updated[call.index] = Classification("K", reason, None, flow.activation_operands(call)[0])
        if updated[call.index].kind == "S":
            combined = 0
            for value in active:
                combined |= roots[value]
            roots[call.output] = combined
        else:
            roots[call.output] = root(call.output)
    return updated, composites
