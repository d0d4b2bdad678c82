"""Rules for reductions, scans, sorting, softmax and normalisations."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .base import RULES, Call, K, S, U, Verdict, dims_of, dt, promoted, rule


def _reduction(label: str) -> object:
    def judge(c: Call) -> Verdict:
        ndim = len(c.x.shape)
        dims = dims_of(c["dim"], ndim)
        n = math.prod(c.x.shape[d] for d in dims)
        logical = label == "any" and c.x.dtype != torch.bool
        if n == 1 and not logical:
            return promoted(c, S(f"{label} over size-1 dims: a reshape"))
        where = dims[0] - ndim if len(dims) == 1 else list(dims)
        if logical:
            return K(f"any over dim {where} of {dt(c.x.dtype)}: keeps only whether a nonzero exists")
        return K(f"{label} over dim {where}: {n} -> 1", n - 1)

    return judge


for _t, _label in {
    "mean.dim": "mean",
    "mean.default": "mean",
    "sum.dim_IntList": "sum",
    "amax.default": "amax",
    "amin.default": "amin",
    "prod.default": "prod",
    "prod.dim_int": "prod",
    "any.default": "any",
    "any.dim": "any",
    "any.dims": "any",
}.items():
    RULES[f"aten.{_t}"] = _reduction(_label)


@rule("aten.argmax.default", "aten.argmin.default")
def _arg_extremum(c: Call) -> Verdict:
    return K(f"{c.op} keeps one index per row: the values are erased")


@rule("aten.max.dim", "aten.min.dim", primary=(0, 1))
def _extremum_dim(c: Call) -> Verdict:
    n = c.x.shape[c["dim"] % len(c.x.shape)] if c.x.shape else 1
    if n == 1 and 0 in (c.outputs or (0,)):
        return S(f"{c.op} over a size-1 dim: a reshape")
    return K(f"{c.op} over dim {c['dim']}: {n} -> 1 value and its index", n - 1)


@rule("aten.var.correction", "aten.var.dim")
def _var(c: Call) -> Verdict:
    n = math.prod(c.x.shape[d] for d in dims_of(c["dim"], len(c.x.shape)))
    return K(f"variance over {n} elements: invariant to adding a constant, {n} -> 1", max(n - 1, 1))


@rule("aten.sort.default", "aten.topk.default", primary=(0, 1))
def _sort(c: Call) -> Verdict:
    """Sorted values and the permutation that sorts them together determine the input (given distinct values)."""
    dim = c["dim"] % len(c.x.shape) if c.x.shape else 0
    size = c.x.shape[dim] if c.x.shape else 1
    kept = c["k"] if c.op == "topk" else size
    outputs = set(c.outputs or (0, 1))
    if kept < size:
        return K(f"topk keeps {kept} of {size} along dim {dim}", size - kept)
    if size == 1 and 0 in outputs:
        return S(f"{c.op} over a size-1 dim: a reshape")
    if outputs >= {0, 1}:
        return S(f"{c.op}: values and the sorting permutation together are the input, reordered")
    if 0 in outputs:
        return K(f"sorted values forget the order of the {size} elements along dim {dim}", 0)
    return K("the sorting permutation alone forgets the values")


RULES["aten.cumsum.default"] = lambda c: promoted(c, S(f"prefix sum along dim {c['dim']}: unit triangular, inverted by differences"))


@rule("aten.diff.default")
def _diff(c: Call) -> Verdict:
    """n-th differences of [prepend, self, append] fix it up to a degree<n polynomial; known entries pin that."""
    n, dim = c["n"], c["dim"]
    if n > 1 and not c.x.dtype.is_floating_point:
        return U("higher-order differences of integers/bools are not modelled")
    total = sum(c[k].shape[dim] for k in ("prepend", "self", "append") if c[k] is not None and not isinstance(c[k], (int, float)))
    mine = c.x.shape[dim]
    fixed = total - mine
    if total <= n:
        return K(f"diff of order {n} over {total} entries is empty: erases all {mine}", mine)
    if fixed >= n:
        return S(f"diff of order {n} along dim {dim}, known entries: {fixed} >= {n}: inverted by prefix sums")
    return K(f"diff of order {n}: erases {n - fixed} of {mine} per row along dim {dim} (polynomials)", n - fixed)


@rule("aten._softmax.default", "aten.softmax.int", "aten._log_softmax.default")
def _softmax(c: Call) -> Verdict:
    dim = c["dim"] % len(c.x.shape) if c.x.shape else 0
    size = c.x.shape[dim] if c.x.shape else 1
    return K(f"invariant to adding a constant: 1 per row of {size} ({c.op} over dim {dim})", 1)


def _eps_note(eps: float, n: int, unit: str) -> tuple[str, int]:
    """Normalising erases the mean exactly; with eps > 0 the scale is only squashed (norm < sqrt(n))."""
    if eps > 0:
        return (
            f"removes the mean: 1 of {n} per {unit}; the scale survives only through eps={eps} "
            f"(norm bounded by sqrt({n})), so it is numerically erased too"
        ), 1
    return f"removes mean and scale: 2 of {n} degrees of freedom per {unit}", 2


def _affine_operand(c: Call, unit: str) -> Verdict | None:
    """A normalisation judged in its weight or bias."""
    if c.name == "bias":
        return S(f"adds a per-{unit} bias: a translation")
    if c.name == "weight":
        return S(f"scales each {unit} by weight", f"the normalised input is nonzero somewhere in every {unit}")
    return None


def _normalised(c: Call, n: int, unit: str, weight: str) -> Verdict:
    """Judged in the input: (out, mean, rstd) together invert; `out` alone erases the mean (and scale)."""
    outputs = set(c.outputs or (0,))
    if {0, 1, 2} <= outputs:
        cond = None if c["weight"] is None else f"weight has no zeros ({weight})"
        return S("outputs (out, mean, rstd) together are injective: x = (out - bias) / weight / rstd + mean", cond)
    if 0 not in outputs:
        return K(f"{unit} statistics only: {n} -> 1 per {unit}", n - 1)
    if n == 1:
        return K(f"normalising over 1 element per {unit}: the output is constant (bias)", 1)
    note, erased = _eps_note(c["eps"], n, unit)
    extra = "; with its mean and rstd outputs it is injective" if c.target.startswith("aten.native") else ""
    return K(f"{note}{extra}", erased)


@rule("aten.native_layer_norm.default", "aten.layer_norm.default", primary=(0,))
def _layer_norm(c: Call) -> Verdict:
    n = math.prod(c["normalized_shape"])
    return _affine_operand(c, "feature") or _normalised(c, n, "row", str(n))


@rule("aten.native_group_norm.default", primary=(0,))
def _group_norm(c: Call) -> Verdict:
    n = c["C"] // c["group"] * c["HxW"]
    return _affine_operand(c, "channel") or _normalised(c, n, "group", str(c["C"]))


@rule(
    "aten._native_batch_norm_legit_no_training.default",
    "aten.batch_norm.default",
    "aten._native_batch_norm_legit.default",
    "aten._native_batch_norm_legit.no_stats",
    primary=(0,),
)
def _batch_norm(c: Call) -> Verdict:
    """Every verdict assumes a positive running variance (else the output is nan)."""
    verdict = _batch_norm_in(c)
    return replace(verdict, domain=(("running_var", "positive"),)) if c["running_var"] is not None else verdict


def _batch_norm_in(c: Call) -> Verdict:
    training = bool(c["training"])
    affine = _affine_operand(c, "channel")
    if affine:
        return affine
    if c.name in ("running_mean", "running_var") and training:
        return K(f"training mode: {c.name} does not reach the output (it is only updated)")
    if c.name == "running_mean":
        return S("shifts each channel by running_mean", "weight has no zeros")
    if c.name == "running_var":
        cond = "weight has no zeros and input differs from running_mean somewhere in every channel"
        return S("scales each channel by 1/sqrt(running_var + eps): strictly monotone", cond)
    if training:
        note, erased = _eps_note(c["eps"], c.x.numel // c.x.shape[1], "channel")
        return K(f"batch statistics per channel: {note}", erased)
    cond = None if c["weight"] is None else f"weight has no zeros ({c['weight'].shape[0]})"
    return S("per-channel affine map with fixed running statistics", cond)


@rule("aten.dropout.default", "aten.native_dropout.default", primary=(0,))
def _dropout(c: Call) -> Verdict:
    p, train = c["p"], c["train"]
    if train is None:
        return U("dropout with train=None is not modelled")
    if not train or p == 0:
        return S(f"dropout inactive ({'p=0' if train else 'eval'}): identity")
    return K("dropout p=1 zeroes every element" if p >= 1 else f"dropout p={p} in training zeroes elements")
