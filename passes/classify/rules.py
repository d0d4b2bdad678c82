"""Injectivity rules: is an ATen primitive information-preserving (S) or -erasing (K) in one operand?

A verdict judges the map  x -> op(..., x, ...)  in the varying operand x, every other operand fixed.
Invariants every rule keeps:
- Arithmetic is exact (reals, integers): rounding inside float arithmetic is ignored, but a dtype
  conversion, explicit or by type promotion, that cannot represent every source value erases.
- "S": injective for every value of the other operands or, with `condition`, whenever the
  condition holds (the condition names the operand so a caller can check it).
- "K": not injective for generic values of the other operands; an exception, if any, is named in
  the reason. `erased` counts degrees of freedom lost per row of the dimension(s) acted on; 0 means
  many-to-one without losing a dimension (gelu, sin); None when it depends on the data.
- "unknown": no rule, or operands the rule does not understand. A rule never guesses.
Multi-output ops are judged on `outputs` (indices into the op's result), by default on
`primary_outputs(target)`: the result proper, not the statistics or masks saved for backward.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch


@dataclass(frozen=True)
class TensorInfo:
    """An operand's static type: its shape and dtype, values unknown."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Verdict:
    """S / K / unknown with a one-line reason naming the property and its size."""

    kind: str
    reason: str
    condition: str | None = None
    erased: int | None = None


GETITEM = str(operator.getitem)


def resolve_op(target: str) -> Callable[..., Any]:
    """The callable a target string names: `torch.ops.<ns>.<name>.<overload>`, or operator.getitem."""
    if target == GETITEM:
        return operator.getitem
    namespace, name, overload = target.split(".")
    return getattr(getattr(getattr(torch.ops, namespace), name), overload)


@dataclass(frozen=True)
class Call:
    """One application: arguments by schema name, and which operand (and list item) varies."""

    target: str
    bound: dict[str, Any]
    name: str | None
    item: int | None
    outputs: tuple[int, ...] | None

    def __getitem__(self, key: str) -> Any:
        return self.bound.get(key)

    @property
    def x(self) -> Any:
        value = self.bound.get(self.name)
        return value[self.item] if self.item is not None else value


Rule = Callable[[Call], Verdict]
RULES: dict[str, Rule] = {}
_NO_TENSOR: set[str] = set()
_LIST_OPERAND = {"aten.cat.default", GETITEM}
_DEFERRED: Mapping[str, str] = {
    "wrap_with_set_grad_enabled": "higher-order op: classify its body graph (the submodule) instead",
}
_PRIMARY: Mapping[str, tuple[int, ...]] = dict.fromkeys(
    ("aten.native_layer_norm.default", "aten._native_batch_norm_legit_no_training.default",
     "aten.native_dropout.default", "aten.max_pool2d_with_indices.default"), (0,))


def covered_targets() -> frozenset[str]:
    """Every target with a rule (a rule may still answer "unknown" for operands it does not model)."""
    return frozenset(RULES)


def primary_outputs(target: str) -> tuple[int, ...] | None:
    """Outputs judged when the caller names none; None means all of them."""
    return _PRIMARY.get(target)


_S = partial(Verdict, "S")
_U = partial(Verdict, "unknown")


def _K(reason: str, erased: int | None = None) -> Verdict:
    return Verdict("K", reason, None, erased)


def _rule(*targets: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES.update(dict.fromkeys(targets, fn))
        return fn

    return register


def _always(verdict: Verdict) -> Rule:
    return lambda c: verdict


def _fmt(shape: Any) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _meta(c: Call) -> list[TensorInfo]:
    """The op's output type(s), computed by running it on meta tensors."""

    def lift(v: Any) -> Any:
        if isinstance(v, TensorInfo):
            return torch.empty(v.shape, dtype=v.dtype, device="meta")
        return [lift(u) for u in v] if isinstance(v, (list, tuple)) else v

    out = resolve_op(c.target)(**{k: lift(v) for k, v in c.bound.items()})
    return [TensorInfo(tuple(o.shape), o.dtype) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _significand_bits(dtype: torch.dtype) -> int:
    return round(-math.log2(torch.finfo(dtype).eps)) + 1


def _narrowing(src: torch.dtype, dst: torch.dtype) -> str | None:
    """Why a cast src -> dst cannot represent every src value, or None when it can."""
    if src == dst or src == torch.bool:
        return None
    if src.is_complex or dst.is_complex:
        raise NotImplementedError("complex dtypes are not modelled")
    name = f"{_dt(src)} -> {_dt(dst)}"
    if dst == torch.bool:
        return f"cast {name} keeps only zero/nonzero"
    if src.is_floating_point:
        if not dst.is_floating_point:
            return f"cast {name} truncates fractions"
        s, d = torch.finfo(src), torch.finfo(dst)
        if d.eps > s.eps:
            bits = f"{_significand_bits(dst)} < {_significand_bits(src)} significant bits"
            return f"dtype cast to lower precision rounds ({name}: {bits})"
        if d.max < s.max or d.smallest_normal > s.smallest_normal:
            return f"dtype cast {name} narrows the exponent range"
        return None
    s = torch.iinfo(src)
    if dst.is_floating_point:
        bits = _significand_bits(dst)
        return None if max(-s.min, s.max) <= 2**bits else f"cast {name} rounds integers beyond 2^{bits}"
    d = torch.iinfo(dst)
    return None if d.min <= s.min and d.max >= s.max else f"cast {name} wraps out-of-range integers"


def _promoted(c: Call, verdict: Verdict) -> Verdict:
    """`verdict`, unless the result dtype cannot hold every value of the varying operand."""
    why = _narrowing(c.x.dtype, _meta(c)[0].dtype)
    return _K(f"implicit {why}") if why else verdict


# --- same elements, rearranged or duplicated ---------------------------------------------------

for _t, _reason in {
    "aten.view.default": "reshape: same elements, new shape",
    "aten.reshape.default": "reshape: same elements, new shape",
    "aten._unsafe_view.default": "reshape: same elements, new shape",
    "aten.flatten.using_ints": "flatten: same elements, new shape",
    "aten.unsqueeze.default": "unsqueeze: same elements, new shape",
    "aten.squeeze.dim": "squeeze: same elements, new shape",
    "aten.squeeze.dims": "squeeze: same elements, new shape",
    "aten.permute.default": "permutation of axes",
    "aten.transpose.int": "transpose: a permutation of axes",
    "aten.t.default": "transpose: a permutation of axes",
    "aten.clone.default": "clone: a copy",
    "aten.contiguous.default": "contiguous: a copy",
    "aten.alias.default": "alias: the same tensor",
    "aten.detach.default": "detach: the same values",
    "aten.lift_fresh_copy.default": "copy of a constant",
}.items():
    RULES[_t] = _always(_S(_reason))
RULES["aten.cat.default"] = lambda c: _S(f"concatenation along dim {c['dim']}: each operand is copied whole")


@_rule("aten.expand.default")
def _expand(c: Call) -> Verdict:
    out = _meta(c)[0]
    if out.numel == 0:
        return _K(f"expand to an empty shape {_fmt(out.shape)} erases every element")
    return _S(f"expand {_fmt(c.x.shape)} -> {_fmt(out.shape)}: duplicates elements, injective")


@_rule("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.unbind.int")
def _split(c: Call) -> Verdict:
    outs = _meta(c)
    chosen = range(len(outs)) if c.outputs is None else c.outputs
    kept, total = sum(outs[i].numel for i in chosen), c.x.numel
    if kept == total:
        return _S(f"split into {len(outs)} parts along dim {c['dim']}: together the outputs hold every element")
    return _K(f"keeps outputs {list(chosen)} of {len(outs)}: drops {total - kept} of {total} elements")


# --- selecting a subset -------------------------------------------------------------------------


@_rule("aten.slice.Tensor", "aten.select.int")
def _slice(c: Call) -> Verdict:
    dim = c["dim"] % len(c.x.shape)
    size = c.x.shape[dim]
    if c.target == "aten.select.int":
        kept, what = 1, "select keeps 1"
    else:
        kept = len(range(*slice(c["start"], c["end"], c["step"]).indices(size)))
        what = f"slice keeps {kept}"
    if kept == size:
        return _S(f"{what} of {size} elements along dim {dim}: nothing dropped")
    return _K(f"drops {size - kept} of {size} elements along dim {dim} ({what})", size - kept)


@_rule("aten.embedding.default", "aten.gather.default", "aten.index_select.default", "aten.index.Tensor")
def _indexing(c: Call) -> Verdict:
    """In the ids: injective iff the addressed entries differ. In the table: only read entries survive."""
    table = "weight" if c.target == "aten.embedding.default" else "self"
    what = {"index": "advanced indexing"}.get(c.target.split(".")[1], c.target.split(".")[1])
    ids = {"aten.embedding.default": [c["indices"]], "aten.index.Tensor": c["indices"]}.get(c.target, [c["index"]])
    if any(isinstance(t, TensorInfo) and t.dtype == torch.bool for t in ids):
        return _U("boolean-mask indexing: data-dependent output")
    if c.name != table:
        if c.target == "aten.embedding.default":
            return _S("embedding lookup: rows selected by ids", f"embedding rows are distinct ({_fmt(c[table].shape)})")
        cond = f"entries of {table} addressed by different ids are distinct"
        return _S(f"{what}: ids select entries of {table}", cond)
    if c.target == "aten.embedding.default":
        rows, reads = c.x.shape[0], ids[0].numel
        if reads < rows:
            return _K(f"embedding reads at most {reads} of {rows} rows: at least {rows - reads} rows erased")
        return _S(f"embedding reads {reads} >= {rows} rows", f"ids cover all {rows} rows")
    n, reads = c.x.numel, _meta(c)[0].numel
    if reads < n:
        return _K(f"{what} reads at most {reads} of {n} elements: at least {n - reads} erased")
    return _S(f"{what} reads {reads} >= {n} elements", f"the ids address every element of {table}")


# --- elementwise --------------------------------------------------------------------------------

for _t, _v in {
    "aten.tanh.default": _S("strictly monotone (tanh)"),
    "aten.sigmoid.default": _S("strictly monotone (sigmoid)"),
    "aten.exp.default": _S("strictly monotone (exp)"),
    "aten.neg.default": _S("negation: an involution"),
    "aten.rsqrt.default": _S("strictly monotone (rsqrt) on its domain", "input > 0 (rsqrt's domain)"),
    "aten.log.default": _S("strictly monotone (log) on its domain", "input > 0 (log's domain)"),
    "aten.sqrt.default": _S("strictly monotone (sqrt) on its domain", "input >= 0 (sqrt's domain)"),
    "aten.relu.default": _K("zeroes the negative half-line"),
    "aten.gelu.default": _K("not monotone: gelu has its minimum -0.17 at x=-0.75, so it is 2-to-1 there", 0),
    "aten.silu.default": _K("not monotone: silu has its minimum -0.28 at x=-1.28, so it is 2-to-1 there", 0),
    "aten.sin.default": _K("periodic (sin): x and x+2pi collide", 0),
    "aten.cos.default": _K("periodic (cos): x and x+2pi collide", 0),
    "aten.abs.default": _K("even (abs): x and -x collide", 0),
}.items():
    RULES[_t] = partial(lambda verdict, c: _promoted(c, verdict), _v)


@_rule("aten.pow.Tensor_Scalar")
def _pow(c: Call) -> Verdict:
    e = c["exponent"]
    if not c.x.dtype.is_floating_point or isinstance(e, bool) or not isinstance(e, (int, float)):
        return _U("pow: only a float tensor to a real scalar exponent is modelled")
    if e == 0:
        return _K("x**0 is constant 1: erases every element")
    if not float(e).is_integer():
        return _S(f"x**{e} is strictly monotone on x > 0", "input > 0 (real powers of negatives are nan)")
    if int(e) % 2 == 0:
        return _K(f"even power x**{int(e)}: x and -x collide", 0)
    if e > 0:
        return _S(f"odd power x**{int(e)}: strictly monotone")
    return _S(f"odd power x**{int(e)}: injective away from 0", "input has no zeros")


def _arith(c: Call, verdict: Verdict) -> Verdict:
    """Binary arithmetic: bool results are not modelled, narrowing promotions erase."""
    if _meta(c)[0].dtype == torch.bool:
        return _U("arithmetic on bool tensors is not modelled")
    return _promoted(c, verdict)


@_rule("aten.add.Tensor", "aten.sub.Tensor")
def _add_sub(c: Call) -> Verdict:
    sign, verb = ("+", "adds") if c.target == "aten.add.Tensor" else ("-", "subtracts")
    if c.name == "self":
        return _arith(c, _S(f"{verb} an operand: x -> x {sign} y is a translation"))
    if c["alpha"] == 0:
        return _K("alpha=0: the other operand is ignored")
    scaled = "x" if c["alpha"] == 1 else f"{c['alpha']}*x"
    return _arith(c, _S(f"{verb} an operand: x -> y {sign} {scaled} is an affine bijection"))


@_rule("aten.mul.Tensor")
def _mul(c: Call) -> Verdict:
    other = c["other"] if c.name == "self" else c["self"]
    overflow = "" if c.x.dtype.is_floating_point else " and the product does not overflow"
    if isinstance(other, TensorInfo):
        cond = f"the other operand ({_fmt(other.shape)}) has no zeros{overflow}"
        return _arith(c, _S("multiplies by an operand; injective where it has no zeros", cond))
    if other == 0:
        return _K("multiplies by 0: erases every element")
    cond = "the product does not overflow" if overflow and abs(other) != 1 else None
    return _arith(c, _S(f"scales by {other}", cond))


@_rule(*(f"aten.{op}.{kind}" for op in ("eq", "ne", "lt", "le", "gt", "ge") for kind in ("Tensor", "Scalar")))
def _compare(c: Call) -> Verdict:
    if c.x.dtype == torch.bool:
        return _U("comparison of a bool operand: injective or constant depending on the other operand")
    return _K(f"comparison produces bool: {_dt(c.x.dtype)} values collapse to 2")


def _broadcast(c: Call, out: TensorInfo, survives: str) -> Verdict | None:
    """A varying operand broadcast to `out` is recoverable from any copy where it `survives`."""
    if c.x.numel >= out.numel:
        return None
    reason = f"{c.target.split('.')[1]}: {c.name} is broadcast x{out.numel // c.x.numel}; it survives where {survives}"
    return _S(reason, f"for every element of {c.name}, {survives} at least once")


@_rule("aten.bitwise_and.Tensor", "aten.__and__.Tensor")
def _bitwise_and(c: Call) -> Verdict:
    if c.x.dtype.is_floating_point:
        return _U("bitwise and of a float tensor")
    spread = _broadcast(c, _meta(c)[0], "the other operand has each of its bits set")
    return spread or _K("bitwise and: bits that are 0 in the other operand are erased "
                        "(injective only if it is all ones)")


@_rule("aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf")
def _where(c: Call) -> Verdict:
    if c.name == "condition":
        return _S("where: the chosen branch reveals the condition", "self and other differ at every element")
    out = _meta(c)[0]
    if out.dtype == torch.bool:
        return _U("where over bool branches is not modelled")
    keep, drop, other = ("True", "False", "other") if c.name == "self" else ("False", "True", "self")
    spread = _broadcast(c, out, f"condition is {keep}")
    if spread:
        return _promoted(c, spread)
    return _K(f"where: elements of {c.name} where condition is {drop} are replaced by {other} "
              f"(injective only if all {keep})")


@_rule("aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten.to.device")
def _cast(c: Call) -> Verdict:
    src, dst = c.x.dtype, c["dtype"] or c.x.dtype
    why = _narrowing(src, dst)
    if why:
        return _K(why)
    return _S("copy (same dtype)" if src == dst else f"cast to wider dtype {_dt(src)} -> {_dt(dst)}")


RULES["aten.cumsum.default"] = lambda c: _promoted(
    c, _S(f"prefix sum along dim {c['dim']}: unit triangular, inverted by differences"))


@_rule("aten.diff.default")
def _diff(c: Call) -> Verdict:
    """n-th differences of [prepend, self, append] fix it up to a degree<n polynomial; known entries pin that."""
    n, dim = c["n"], c["dim"]
    if n > 1 and not c.x.dtype.is_floating_point:
        return _U("higher-order differences of integers/bools are not modelled")
    total = sum(c[k].shape[dim] for k in ("prepend", "self", "append") if isinstance(c[k], TensorInfo))
    mine = c.x.shape[dim]
    fixed = total - mine
    if total <= n:
        return _K(f"diff of order {n} over {total} entries is empty: erases all {mine}", mine)
    if fixed >= n:
        return _S(f"diff of order {n} along dim {dim}, known entries: {fixed} >= {n}: inverted by prefix sums")
    return _K(f"diff of order {n}: erases {n - fixed} of {mine} per row along dim {dim} (polynomials)", n - fixed)


# --- reductions and normalisations --------------------------------------------------------------


def _reduction(label: str) -> Rule:
    def rule(c: Call) -> Verdict:
        ndim, dim = len(c.x.shape), c["dim"]
        dims = [dim] if isinstance(dim, int) else dim
        dims = range(ndim) if not dims else sorted({d % ndim for d in dims})
        n = math.prod(c.x.shape[d] for d in dims)
        if n == 1:
            return _promoted(c, _S(f"{label} over size-1 dims: a reshape"))
        where = dims[0] - ndim if len(dims) == 1 else list(dims)
        return _K(f"{label} over dim {where}: {n} -> 1", n - 1)

    return rule


RULES.update({"aten.mean.dim": _reduction("mean"), "aten.sum.dim_IntList": _reduction("sum"),
              "aten.amax.default": _reduction("amax")})


@_rule("aten._softmax.default", "aten.softmax.int")
def _softmax(c: Call) -> Verdict:
    dim = c["dim"] % len(c.x.shape)
    return _K(f"invariant to adding a constant: 1 per row of {c.x.shape[dim]} (softmax over dim {dim})", 1)


def _eps_note(eps: float, n: int, unit: str) -> tuple[str, int]:
    """Normalising erases the mean exactly; with eps > 0 the scale is only squashed (norm < sqrt(n))."""
    if eps > 0:
        return (f"removes the mean: 1 of {n} per {unit}; the scale survives only through eps={eps} "
                f"(norm bounded by sqrt({n})), so it is numerically erased too"), 1
    return f"removes mean and scale: 2 of {n} degrees of freedom per {unit}", 2


@_rule("aten.native_layer_norm.default", "aten.layer_norm.default")
def _layer_norm(c: Call) -> Verdict:
    n = math.prod(c["normalized_shape"])
    if c.name == "bias":
        return _S("adds bias (broadcast over rows): a translation")
    if c.name == "weight":
        return _S("scales each feature by weight", "the normalised input is nonzero somewhere in every feature")
    outputs = set(c.outputs or (0,))
    if {0, 1, 2} <= outputs:
        cond = None if c["weight"] is None else f"weight has no zeros ({n})"
        return _S("outputs (out, mean, rstd) together are injective: x = (out - bias) / weight / rstd + mean", cond)
    if 0 not in outputs:
        return _K(f"row statistics only: {n} -> 1 per row", n - 1)
    if n == 1:
        return _K("layer norm over 1 element: the output is constant (bias)", 1)
    note, erased = _eps_note(c["eps"], n, "row")
    extra = "; with its mean and rstd outputs it is injective" if c.target.startswith("aten.native") else ""
    return _K(f"{note}{extra}", erased)


@_rule("aten._native_batch_norm_legit_no_training.default", "aten.batch_norm.default")
def _batch_norm(c: Call) -> Verdict:
    training = bool(c["training"])
    if c.name == "bias":
        return _S("adds a per-channel bias: a translation")
    if c.name == "weight":
        return _S("scales each channel by weight", "the normalised input is nonzero somewhere in every channel")
    if c.name in ("running_mean", "running_var") and training:
        return _K(f"training mode: {c.name} does not reach the output (it is only updated)")
    if c.name == "running_mean":
        return _S("shifts each channel by running_mean", "weight has no zeros")
    if c.name == "running_var":
        cond = "weight has no zeros and input differs from running_mean somewhere in every channel"
        return _S("scales each channel by 1/sqrt(running_var + eps): strictly monotone", cond)
    if training:
        note, erased = _eps_note(c["eps"], c.x.numel // c.x.shape[1], "channel")
        return _K(f"batch statistics per channel: {note}", erased)
    cond = None if c["weight"] is None else f"weight has no zeros ({c['weight'].shape[0]})"
    return _S("per-channel affine map with fixed running statistics", cond)


@_rule("aten.dropout.default", "aten.native_dropout.default")
def _dropout(c: Call) -> Verdict:
    p, train = c["p"], c["train"]
    if train is None:
        return _U("dropout with train=None is not modelled")
    if not train or p == 0:
        return _S(f"dropout inactive ({'p=0' if train else 'eval'}): identity")
    return _K("dropout p=1 zeroes every element" if p >= 1 else f"dropout p={p} in training zeroes elements")


# --- linear maps --------------------------------------------------------------------------------


def _linmap(k_in: int, k_out: int, unit: str, operand: str) -> Verdict:
    """x -> x A for fixed A (k_in x k_out): rank <= min; injective iff A has full row rank k_in."""
    if k_out < k_in:
        return _K(f"rank <= {k_out} < {k_in}: erases {k_in - k_out} dimensions per {unit}", k_in - k_out)
    where = "" if unit == "row" else f" on each {unit}"
    if k_out == k_in:
        return _S(f"square linear map {k_in}x{k_in}{where}", f"{operand} is invertible ({k_in}x{k_in})")
    return _S(f"up-projection {k_in} -> {k_out}{where}", f"{operand} has full rank {k_in}")


@_rule("aten.mm.default", "aten.bmm.default", "aten.matmul.default", "aten.addmm.default")
def _matmul(c: Call) -> Verdict:
    """Each row of the left operand meets every right matrix it is broadcast against (and vice versa)."""
    if c.target == "aten.addmm.default":
        if c.name == "self":
            return _K("beta=0: the bias is ignored") if c["beta"] == 0 else _S("adds a bias: a translation")
        if c["alpha"] == 0:
            return _K("alpha=0: the product is ignored")
    left = "mat1" if c.target == "aten.addmm.default" else "self"
    right = "other" if c.target == "aten.matmul.default" else "mat2"
    a, b = c[left].shape, c[right].shape
    a, b = ((1, *a) if len(a) == 1 else a), ((*b, 1) if len(b) == 1 else b)
    pairs = math.prod(torch.broadcast_shapes(a[:-2], b[:-2]))
    if c.name == left:
        return _linmap(a[-1], b[-1] * pairs // math.prod(a[:-2]), "row", "the right operand")
    return _linmap(a[-1], a[-2] * pairs // math.prod(b[:-2]), "column", "the left operand")


@_rule("aten.linear.default")
def _linear(c: Call) -> Verdict:
    x, w = c["input"], c["weight"]
    if c.name == "bias":
        return _S("adds bias (broadcast over rows): a translation")
    if c.name == "input":
        return _linmap(w.shape[-1], w.shape[0] if len(w.shape) == 2 else 1, "row", "weight")
    return _linmap(x.shape[-1], math.prod(x.shape[:-1]), "weight row", "the input (rows x features)")


def _per_dim(v: Any, n: int) -> list[int]:
    v = [v] if isinstance(v, int) else list(v)
    return v * n if len(v) == 1 else v


@_rule("aten.convolution.default", "aten.conv2d.default", "aten.conv2d.padding")
def _conv(c: Call) -> Verdict:
    """Per sample a linear map: K if some input position is never read or the output is smaller."""
    if c["transposed"]:
        return _U("transposed convolution is not modelled")
    if c.name == "bias":
        return _S("adds a per-channel bias: a translation")
    x, w, out = c["input"], c["weight"], _meta(c)[0]
    if c.name == "weight":
        positions = out.shape[0] * math.prod(out.shape[2:])
        return _linmap(math.prod(w.shape[1:]), positions, "filter", "the input's patch matrix")
    n_sp = len(x.shape) - 2
    stride, dilation, padding = _per_dim(c["stride"], n_sp), _per_dim(c["dilation"], n_sp), c["padding"]
    if isinstance(padding, str):
        padding = [d * (k - 1) // 2 if padding == "same" else 0 for d, k in zip(dilation, w.shape[2:], strict=True)]
    padding = _per_dim(padding, n_sp)
    for i in range(n_sp):
        size, kernel = x.shape[2 + i], w.shape[2 + i]
        read = {o * stride[i] - padding[i] + j * dilation[i] for o in range(out.shape[2 + i]) for j in range(kernel)}
        skipped = size - len(read & set(range(size)))
        if skipped:
            return _K(f"convolution never reads {skipped} of {size} positions along spatial dim {i} "
                      f"(stride {stride[i]})")
    n_in, n_out = math.prod(x.shape[1:]), math.prod(out.shape[1:])
    if n_out < n_in:
        return _K(f"rank <= {n_out} < {n_in}: erases {n_in - n_out} dimensions per sample", n_in - n_out)
    return _S(f"convolution {_fmt(x.shape[1:])} -> {_fmt(out.shape[1:])} per sample",
              f"the convolution's linear map has full column rank ({n_out}x{n_in})")


@_rule("aten.max_pool2d.default", "aten.max_pool2d_with_indices.default", "aten.adaptive_avg_pool2d.default")
def _pool(c: Call) -> Verdict:
    """Pooling keeps one value per window: K unless every window is a single element read once."""
    hw_in, hw_out = c.x.shape[-2:], _meta(c)[0].shape[-2:]
    n_in, n_out = math.prod(hw_in), math.prod(hw_out)
    if c.target == "aten.adaptive_avg_pool2d.default":
        if hw_in == hw_out:
            return _S("adaptive average pool to the same size: identity")
        if n_out < n_in:
            return _K(f"average pool {_fmt(hw_in)} -> {_fmt(hw_out)}: erases {n_in - n_out} per channel", n_in - n_out)
        return _U("upsampling adaptive average pool is not modelled")
    k = _per_dim(c["kernel_size"], 2)
    if k == [1, 1] and hw_in == hw_out:
        return _S("1x1 max pool with stride 1: identity")
    return _K(f"max over {k[0]}x{k[1]} windows: {_fmt(hw_in)} -> {_fmt(hw_out)} per channel; non-maxima are erased")


# --- constants, metadata, tuple projections -----------------------------------------------------

_CONSTANTS = ("aten.arange.default", "aten.arange.start", "aten.arange.start_step", "aten.full.default",
              "aten.zeros.default", "aten.ones.default", "aten.scalar_tensor.default", "aten.empty.memory_format")
RULES.update(dict.fromkeys(_CONSTANTS, _always(_S("constant: no tensor input"))))
_NO_TENSOR.update(_CONSTANTS)
RULES["aten.new_ones.default"] = _always(_K("new_ones reads only its input's dtype and device: every value erased"))
RULES["aten._assert_tensor_metadata.default"] = _always(_K("metadata assertion returns nothing: every value erased"))
RULES["aten.sym_size.int"] = lambda c: _K(f"keeps only the size of dim {c['dim']}: every value erased")


@_rule(GETITEM)
def _getitem(c: Call) -> Verdict:
    """Projection out of a multi-output node; judged per item (varying_item) or for the whole tuple."""
    n = len(c["self"])
    i = c["index"] % n
    if c.item is None:
        if n == 1:
            return _S("selects the only output")
        return _K(f"selects output {i} of {n}: the others are dropped here (another getitem may keep them)")
    if c.item % n == i:
        return _S(f"selects output {i}: identity on it")
    return _K(f"output {c.item} is not selected (getitem picks {i})")


# --- entry point --------------------------------------------------------------------------------


def bind_arguments(target: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Arguments by schema name, defaults filled in."""
    if target == GETITEM:
        return dict(zip(("self", "index"), args, strict=False))
    bound = {}
    for i, a in enumerate(resolve_op(target)._schema.arguments):
        if i < len(args) and not a.kwarg_only:
            bound[a.name] = args[i]
        elif a.name in kwargs:
            bound[a.name] = kwargs[a.name]
        elif a.has_default_value():
            bound[a.name] = a.default_value
    return bound


def operand_name(target: str, position: int) -> str | None:
    """The schema name of positional argument `position` (None when out of range)."""
    names = ["self", "index"] if target == GETITEM else [
        a.name for a in resolve_op(target)._schema.arguments if not a.kwarg_only]
    return names[position] if 0 <= position < len(names) else None


def classify(
    target: str,
    args: tuple,
    kwargs: dict,
    varying: int,
    *,
    varying_item: int | None = None,
    outputs: tuple[int, ...] | None = None,
) -> Verdict:
    """Judge `target` in operand `args[varying]` (item `varying_item` of it when it is a list).

    `outputs` restricts a multi-output op to those results (default: `primary_outputs(target)`).
    Never raises: anything a rule cannot read yields "unknown".
    """
    rule = RULES.get(target)
    if rule is None:
        return _U(_DEFERRED.get(target, f"no rule for {target}"))
    try:
        call = Call(target, bind_arguments(target, args, kwargs), operand_name(target, varying),
                    varying_item, outputs or primary_outputs(target))
        x = None if target in _NO_TENSOR else call.x
        listed = target in _LIST_OPERAND and isinstance(x, (list, tuple))
        if target not in _NO_TENSOR and not isinstance(x, TensorInfo) and not listed:
            return _U(f"operand {varying} ({call.name}) of {target} is not a tensor "
                      "(name a list item with varying_item)")
        empty = isinstance(x, TensorInfo) and x.numel == 0
        verdict = _S(f"empty operand ({_fmt(x.shape)}): nothing to erase") if empty else rule(call)
    except Exception as exc:  # noqa: BLE001 - operands a rule cannot read are "unknown", never a guess
        verdict = _U(f"rule for {target} cannot judge these operands ({type(exc).__name__}: {exc})")
    return Verdict(verdict.kind, " ".join(verdict.reason.split()), verdict.condition, verdict.erased)
