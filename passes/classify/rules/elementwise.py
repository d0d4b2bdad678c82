"""Rules for elementwise calls: unary maps, arithmetic, comparisons, logic, selection, casts."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from .base import RULES, Call, K, S, TensorInfo, U, Verdict, dt, meta, narrowing, promoted, resolve_op, rule


def exact_on_small_ints(c: Call) -> Verdict | None:
    """For bool and <= 16-bit integer operands of a one-operand map: decided by evaluating every value."""
    x = c.x.dtype
    if x.is_floating_point or x.is_complex or (x != torch.bool and torch.iinfo(x).bits > 16):
        return None
    values = torch.tensor([False, True]) if x == torch.bool else torch.arange(torch.iinfo(x).min, torch.iinfo(x).max + 1).to(x)
    images = resolve_op(c.target)(**{**c.bound, c.name: values})
    if images.is_floating_point():
        images = torch.where(torch.isnan(images), torch.full_like(images, float("inf")), images)
    distinct = int(torch.unique(images).numel())
    if distinct == values.numel():
        return S(f"{c.op} maps all {values.numel()} values of {dt(x)} to distinct results")
    return K(f"{c.op} maps the {values.numel()} values of {dt(x)} to {distinct} results")


def _unary(verdict: Verdict) -> object:
    return partial(lambda v, c: exact_on_small_ints(c) or promoted(c, v), verdict)


def _on(domain: str) -> tuple[tuple[str, str], ...]:
    return (("self", domain),)


for _t, _v in {
    "tanh": S("strictly monotone (tanh)"),
    "sigmoid": S("strictly monotone (sigmoid)"),
    "exp": S("strictly monotone (exp)"),
    "expm1": S("strictly monotone (expm1)"),
    "sinh": S("strictly monotone (sinh)"),
    "asinh": S("strictly monotone (asinh)"),
    "atan": S("strictly monotone (atan)"),
    "erf": S("strictly monotone (erf)"),
    "neg": S("negation: an involution"),
    "rsqrt": S("strictly monotone (rsqrt) on its domain", "input > 0 (rsqrt's domain)", domain=_on("positive")),
    "log": S("strictly monotone (log) on its domain", "input > 0 (log's domain)", domain=_on("positive")),
    "log2": S("strictly monotone (log2) on its domain", "input > 0 (log2's domain)", domain=_on("positive")),
    "log10": S("strictly monotone (log10) on its domain", "input > 0 (log10's domain)", domain=_on("positive")),
    "log1p": S("strictly monotone (log1p) on its domain", "input > -1 (log1p's domain)", domain=_on("above_minus_one")),
    "sqrt": S("strictly monotone (sqrt) on its domain", "input >= 0 (sqrt's domain)", domain=_on("positive")),
    "reciprocal": S("1/x is injective away from 0", "input has no zeros", domain=_on("nonzero")),
    "asin": S("strictly monotone (asin) on [-1, 1]", "|input| <= 1 (asin's domain)", domain=_on("open_unit")),
    "acos": S("strictly monotone (acos) on [-1, 1]", "|input| <= 1 (acos's domain)", domain=_on("open_unit")),
    "atanh": S("strictly monotone (atanh) on (-1, 1)", "|input| < 1 (atanh's domain)", domain=_on("open_unit")),
    "acosh": S("strictly monotone (acosh) on [1, inf)", "input >= 1 (acosh's domain)", domain=_on("above_one")),
    "relu": K("zeroes the negative half-line"),
    "gelu": K("not monotone: gelu has its minimum -0.17 at x=-0.75, so it is 2-to-1 there", 0),
    "silu": K("not monotone: silu has its minimum -0.28 at x=-1.28, so it is 2-to-1 there", 0),
    "sin": K("periodic (sin): x and x+2pi collide", 0),
    "cos": K("periodic (cos): x and x+2pi collide", 0),
    "tan": K("periodic (tan): x and x+pi collide", 0),
    "cosh": K("even (cosh): x and -x collide", 0),
    "isinf": K("isinf produces bool: every finite value maps to False"),
    "isnan": K("isnan produces bool: every number maps to False"),
}.items():
    RULES[f"aten.{_t}.default"] = _unary(_v)


@rule("aten.abs.default", "aten.sign.default", "aten.floor.default", "aten.ceil.default", "aten.round.default", "aten.trunc.default")
def _rounding(c: Call) -> Verdict:
    """Identity on the values a dtype can hold (integers, unsigned, bool), many-to-one on the reals."""
    exact = exact_on_small_ints(c)
    if exact:
        return exact
    x = c.x.dtype
    if c.op in ("floor", "ceil", "round", "trunc"):
        if not x.is_floating_point:
            return S(f"{c.op} of {dt(x)}: identity on integers")
        return K(f"{c.op} maps every real in an interval of width 1 to one integer", 0)
    if x == torch.bool or (not x.is_floating_point and torch.iinfo(x).min == 0 and c.op == "abs"):
        return S(f"{c.op} of {dt(x)}: identity")
    if c.op == "abs":
        return K("even (abs): x and -x collide", 0)
    return K("sign keeps 3 values: -1, 0, 1")


@rule("aten.bitwise_not.default", "aten.logical_not.default")
def _not(c: Call) -> Verdict:
    if c.op == "logical_not" and c.x.dtype != torch.bool:
        return K(f"logical_not of {dt(c.x.dtype)} keeps only zero/nonzero")
    if c.x.dtype.is_floating_point:
        return U("bitwise not of a float tensor")
    return S(f"{c.op}: an involution")


@rule("aten.elu.default", "aten.leaky_relu.default")
def _leaky(c: Call) -> Verdict:
    if c.op == "leaky_relu":
        slope = c["negative_slope"]
        if slope > 0:
            return promoted(c, S(f"leaky_relu with slope {slope} > 0: strictly monotone"))
        return K(f"leaky_relu with slope {slope} <= 0: x < 0 collides with x = 0 or with positive x")
    alpha, scale, input_scale = c["alpha"], c["scale"], c["input_scale"]
    if alpha > 0 and input_scale > 0 and scale != 0:
        return promoted(c, S("elu with alpha > 0: strictly monotone"))
    return K(f"elu with alpha={alpha}, input_scale={input_scale}: not injective on x <= 0")


@rule("aten.hardtanh.default", "aten.clamp.default", "aten.clamp.Tensor")
def _clamp(c: Call) -> Verdict:
    low, high = (c["min_val"], c["max_val"]) if c.op == "hardtanh" else (c["min"], c["max"])
    if c.name != "self":
        return K(f"clamp: the bound {c.name} survives only where it binds")
    finite = [b for b in (low, high) if b is not None and not (isinstance(b, float) and abs(b) == float("inf"))]
    if not finite:
        return promoted(c, S(f"{c.op} without finite bounds: identity"))
    return K(f"{c.op} saturates: every value beyond a bound maps to the bound", 0)


# --- arithmetic ---------------------------------------------------------------------------------


def _arith(c: Call, verdict: Verdict) -> Verdict:
    """Binary arithmetic: bool results are not modelled, narrowing promotions erase."""
    if meta(c)[0].dtype == torch.bool:
        return U("arithmetic on bool tensors is not modelled")
    return promoted(c, verdict)


def _other(c: Call) -> object:
    """The operand that stays fixed in a binary call (self <-> other)."""
    return c["other"] if c.name == "self" else c["self"]


@rule("aten.add.Tensor", "aten.sub.Tensor", "aten.add.Scalar", "aten.sub.Scalar")
def _add_sub(c: Call) -> Verdict:
    sign, verb = ("+", "adds") if c.op == "add" else ("-", "subtracts")
    if c.name == "self":
        return _arith(c, S(f"{verb} an operand: x -> x {sign} y is a translation"))
    if c["alpha"] == 0:
        return K("alpha=0: the other operand is ignored")
    scaled = "x" if c["alpha"] == 1 else f"{c['alpha']}*x"
    return _arith(c, S(f"{verb} an operand: x -> y {sign} {scaled} is an affine bijection"))


@rule("aten.mul.Tensor", "aten.mul.Scalar")
def _mul(c: Call) -> Verdict:
    other = _other(c)
    overflow = "" if c.x.dtype.is_floating_point else " and the product does not overflow"
    if isinstance(other, TensorInfo):
        cond = f"the other operand ({'x'.join(map(str, other.shape)) or 'scalar'}) has no zeros{overflow}"
        domain = (("other" if c.name == "self" else "self", "nonzero"),)
        return _arith(c, S("multiplies by an operand; injective where it has no zeros", cond, domain=domain))
    if other == 0:
        return K("multiplies by 0: erases every element")
    cond = "the product does not overflow" if overflow and abs(other) != 1 else None
    return _arith(c, S(f"scales by {other}", cond))


@rule("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div(c: Call) -> Verdict:
    if c["rounding_mode"] is not None:
        exact = c.name == "self" and not c.x.dtype.is_floating_point and isinstance(c["other"], int) and abs(c["other"]) == 1
        if exact:
            return S(f"division by {c['other']}: a sign flip at most")
        return replace(
            K(f"division with rounding_mode={c['rounding_mode']!r} maps an interval to one integer", 0), domain=(("other", "nonzero"),)
        )
    other = c["other"]
    if not isinstance(other, TensorInfo) and other == 0:
        return K("division by 0: every value maps to +-inf or nan")
    domain = tuple((n, "nonzero") for n in ("self", "other") if isinstance(c[n], TensorInfo) and (n == "other" or c.name == "other"))
    if c.name == "self":
        cond = "the divisor has no zeros" if isinstance(other, TensorInfo) else None
        return _arith(c, S("divides by an operand: x -> x / y", cond, domain=domain))
    return _arith(c, S("x -> y / x is injective away from 0", "self and the divisor have no zeros", domain=domain))


@rule("aten.pow.Tensor_Scalar")
def _pow(c: Call) -> Verdict:
    e = c["exponent"]
    if not c.x.dtype.is_floating_point or isinstance(e, bool) or not isinstance(e, (int, float)):
        return U("pow: only a float tensor to a real scalar exponent is modelled")
    if e == 0:
        return K("x**0 is constant 1: erases every element")
    if not float(e).is_integer():
        return S(f"x**{e} is strictly monotone on x > 0", "input > 0 (real powers of negatives are nan)", domain=_on("positive"))
    if int(e) % 2 == 0:
        return K(f"even power x**{int(e)}: x and -x collide", 0)
    if e > 0:
        return S(f"odd power x**{int(e)}: strictly monotone")
    return S(f"odd power x**{int(e)}: injective away from 0", "input has no zeros", domain=_on("nonzero"))


@rule("aten.pow.Scalar", "aten.pow.Tensor_Tensor")
def _pow_tensor(c: Call) -> Verdict:
    """base ** exponent: monotone in a positive base for a nonzero exponent, in the exponent for a base != 1."""
    if not meta(c)[0].dtype.is_floating_point:
        return U("integer powers are not modelled")
    base = c["self"]
    if c.name == "exponent" and not isinstance(base, TensorInfo):
        if base > 0 and base != 1:
            return promoted(c, S(f"{base}**x is strictly monotone"))
        return K(f"{base}**x is constant or undefined on most reals") if base in (0, 1) else U(f"({base})**x is nan for fractional x")
    if c.name == "exponent":
        return promoted(c, S("b**x is strictly monotone in x", "the base is positive and != 1", domain=(("self", "positive"),)))
    return promoted(
        c,
        S(
            "x**e is strictly monotone on x > 0",
            "x > 0 and the exponent has no zeros",
            domain=(("self", "positive"), ("exponent", "nonzero")),
        ),
    )


@rule("aten.maximum.default", "aten.minimum.default")
def _extremum(c: Call) -> Verdict:
    side = "larger" if c.op == "maximum" else "smaller"
    if c.x.dtype == torch.bool:
        keep = "False" if c.op == "maximum" else "True"
        spread = _broadcast(c, meta(c)[0], f"the other operand is {keep}")
        if spread:
            return spread
    return K(f"{c.op}: {c.name} is replaced by the other operand wherever that is {side}", 0)


@rule("aten.atan2.default", "aten.atan2.out")
def _atan2(c: Call) -> Verdict:
    if c.name == "out":
        return K("atan2.out overwrites out")
    other = "other" if c.name == "self" else "self"
    return promoted(
        c, S(f"atan2 is strictly monotone in {c.name} for a nonzero {other}", f"{other} has no zeros", domain=((other, "nonzero"),))
    )


@rule("aten.fmod.Tensor", "aten.fmod.Scalar", "aten.remainder.Tensor", "aten.remainder.Scalar")
def _modulo(c: Call) -> Verdict:
    if c.name == "self":
        verdict = K(f"{c.op} is periodic in its dividend: x and x + other collide", 0)
    else:
        verdict = K(f"{c.op} in its divisor: every divisor larger than |self| leaves self unchanged", 0)
    return replace(verdict, domain=(("other", "nonzero"),))


# --- comparisons and logic ----------------------------------------------------------------------


def _bool_map(c: Call) -> Verdict:
    """A comparison or logic op of a bool operand against a scalar: S iff False and True stay apart."""
    op = getattr(torch, c.op.strip("_"))
    images = [op(torch.tensor(v), c["other"]) for v in (False, True)]
    if not torch.equal(images[0], images[1]):
        return S(f"{c.op} with {c['other']!r} maps False and True apart")
    return K(f"{c.op} with {c['other']!r} maps False and True to {images[0].item()}")


@rule(*(f"aten.{op}.{kind}" for op in ("eq", "ne", "lt", "le", "gt", "ge") for kind in ("Tensor", "Scalar")))
def _compare(c: Call) -> Verdict:
    if c.x.dtype != torch.bool:
        return K(f"comparison produces bool: {dt(c.x.dtype)} values collapse to 2")
    if not isinstance(_other(c), TensorInfo):
        return _bool_map(c)
    if c.op in ("eq", "ne"):
        return S(f"{c.op} of bools is xor (or its negation) with the other operand: an involution")
    return K(f"{c.op} of bools keeps {c.name} only where the other operand allows both outcomes")


def _broadcast(c: Call, out: TensorInfo, survives: str) -> Verdict | None:
    """A varying operand broadcast to `out` is recoverable from any copy where it `survives`."""
    if c.x.numel >= out.numel:
        return None
    reason = f"{c.op}: {c.name} is broadcast x{out.numel // c.x.numel}; it survives where {survives}"
    return S(reason, f"for every element of {c.name}, {survives} at least once")


@rule(
    "aten.bitwise_and.Tensor",
    "aten.__and__.Tensor",
    "aten.bitwise_or.Tensor",
    "aten.bitwise_xor.Tensor",
    "aten.bitwise_and.Scalar",
    "aten.bitwise_or.Scalar",
    "aten.bitwise_xor.Scalar",
    "aten.logical_and.default",
    "aten.logical_or.default",
    "aten.logical_xor.default",
)
def _bitwise(c: Call) -> Verdict:
    """xor is an involution; and / or keep a bit only where the other operand's bit is 1 / 0."""
    logical, kind = c.op.startswith("logical"), next(k for k in ("xor", "and", "or") if k in c.op)
    if c.x.dtype.is_floating_point and not logical:
        return U("bitwise op of a float tensor")
    if logical and c.x.dtype != torch.bool:
        return K(f"{c.op} of {dt(c.x.dtype)} keeps only zero/nonzero")
    if kind == "xor":
        return S(f"{c.op}: an involution for a fixed other operand")
    other = _other(c)
    if not isinstance(other, TensorInfo):
        neutral = (-1, True) if kind == "and" else (0, False)
        if other in neutral and type(other) is (bool if c.x.dtype == torch.bool else int):
            return S(f"{c.op} with {other!r}: identity")
        return K(f"{c.op} with {other!r}: bits that are {1 if kind == 'or' else 0} in it are erased")
    need = "set" if kind == "and" else "clear"
    spread = _broadcast(c, meta(c)[0], f"the other operand has each of its bits {need}")
    return spread or K(
        f"{c.op}: bits that are {'0' if kind == 'and' else '1'} in the other operand are erased "
        f"(injective only if it is all {'ones' if kind == 'and' else 'zeros'})"
    )


@rule("aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf")
def _where(c: Call) -> Verdict:
    if c.name == "condition":
        return S(
            "where: the chosen branch reveals the condition",
            "self and other differ at every element",
            domain=(("self", "positive"), ("other", "negative")),
        )
    out = meta(c)[0]
    if out.dtype == torch.bool:
        return U("where over bool branches is not modelled")
    keep, drop, other = ("True", "False", "other") if c.name == "self" else ("False", "True", "self")
    spread = _broadcast(c, out, f"condition is {keep}")
    if spread:
        return promoted(c, spread)
    return K(f"where: elements of {c.name} where condition is {drop} are replaced by {other} (injective only if all {keep})")


# --- casts and whole-tensor writes --------------------------------------------------------------


@rule("aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten.to.device")
def _cast(c: Call) -> Verdict:
    src, dst = c.x.dtype, c["dtype"] or c.x.dtype
    why = narrowing(src, dst)
    if why:
        return K(why)
    return S("copy (same dtype)" if src == dst else f"cast to wider dtype {dt(src)} -> {dt(dst)}")


@rule("aten.copy.default")
def _copy(c: Call) -> Verdict:
    if c.name == "self":
        return K("copy overwrites self with src: only its shape and dtype survive")
    return promoted(c, S("copy writes src whole (broadcast) into self's shape and dtype"))


RULES["aten.fill.Scalar"] = lambda c: K("fill replaces every element by a constant")
RULES["aten.full_like.default"] = lambda c: K("full_like reads only its input's shape and dtype: every value erased")
RULES["aten.new_ones.default"] = lambda c: K("new_ones reads only its input's dtype and device: every value erased")
