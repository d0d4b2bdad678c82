"""Rules for calls that move elements: reshape, permute, copy, duplicate, concatenate, split, slice, pad."""

from __future__ import annotations

import math

import torch

from .base import RULES, Call, K, S, U, Verdict, always, fmt, meta, rule

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
    "aten.flip.default": "flip: a permutation of elements",
    "aten.clone.default": "clone: a copy",
    "aten.contiguous.default": "contiguous: a copy",
    "aten.alias.default": "alias: the same tensor",
    "aten.detach.default": "detach: the same values",
    "aten.lift_fresh_copy.default": "copy of a constant",
}.items():
    RULES[_t] = always(S(_reason))
RULES["aten.cat.default"] = lambda c: S(f"concatenation along dim {c['dim']}: each operand is copied whole")


@rule("aten.expand.default", "aten.repeat.default")
def _duplicate(c: Call) -> Verdict:
    """Every element is copied at least once unless the output is empty (a size or repeat count 0)."""
    out = meta(c)[0]
    if out.numel == 0:
        return K(f"{c.op} to an empty shape {fmt(out.shape)} erases every element")
    return S(f"{c.op} {fmt(c.x.shape)} -> {fmt(out.shape)}: duplicates elements, injective")


@rule("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.unbind.int")
def _split(c: Call) -> Verdict:
    outs = meta(c)
    chosen = range(len(outs)) if c.outputs is None else c.outputs
    kept, total = sum(outs[i].numel for i in chosen), c.x.numel
    if kept == total:
        return S(f"split into {len(outs)} parts along dim {c['dim']}: together the outputs hold every element")
    return K(f"keeps outputs {list(chosen)} of {len(outs)}: drops {total - kept} of {total} elements")


@rule("aten.slice.Tensor", "aten.select.int")
def _slice(c: Call) -> Verdict:
    dim = c["dim"] % len(c.x.shape)
    size = c.x.shape[dim]
    if c.target == "aten.select.int":
        kept, what = 1, "select keeps 1"
    else:
        kept = len(range(*slice(c["start"], c["end"], c["step"]).indices(size)))
        what = f"slice keeps {kept}"
    if kept == size:
        return S(f"{what} of {size} elements along dim {dim}: nothing dropped")
    return K(f"drops {size - kept} of {size} elements along dim {dim} ({what})", size - kept)


@rule("aten.diagonal.default")
def _diagonal(c: Call) -> Verdict:
    kept = meta(c)[0].numel
    if kept == c.x.numel:
        return S("diagonal holds every element (the other dims are size 1)")
    return K(f"diagonal keeps {kept} of {c.x.numel} elements")


@rule("aten.as_strided.default")
def _as_strided(c: Call) -> Verdict:
    """A view of self's storage (assumed contiguous, offset 0): S iff it addresses every element."""
    size, stride, offset = c["size"], c["stride"], c["storage_offset"] or 0
    if math.prod(size) > 1 << 22:
        return U("as_strided view too large to enumerate")
    addressed = torch.full((), offset, dtype=torch.int64)
    for n, s in zip(size, stride, strict=True):
        addressed = (addressed.unsqueeze(-1) + torch.arange(n) * s).reshape(-1)
    hit = int(torch.unique(addressed[(addressed >= 0) & (addressed < c.x.numel)]).numel())
    if hit == c.x.numel:
        return S(f"as_strided addresses all {hit} elements of a contiguous operand")
    return K(f"as_strided addresses {hit} of {c.x.numel} elements (contiguous operand): {c.x.numel - hit} erased")


def _kept_after_pad(shape: tuple[int, ...], pad: list[int]) -> int:
    """Elements of `shape` that survive `pad` ((left, right) pairs from the last dim backwards; negative crops)."""
    sizes = list(shape)
    for i in range(len(pad) // 2):
        d = len(sizes) - 1 - i
        sizes[d] = max(0, sizes[d] + min(pad[2 * i], 0) + min(pad[2 * i + 1], 0))
    return math.prod(sizes)


@rule(
    "aten.constant_pad_nd.default",
    "aten.reflection_pad1d.default",
    "aten.reflection_pad2d.default",
    "aten.reflection_pad3d.default",
    "aten.replication_pad2d.default",
    "aten.replication_pad3d.default",
)
def _pad(c: Call) -> Verdict:
    """Padding copies the operand whole into the output; a negative pad crops."""
    pad = list(c["pad"] if c["pad"] is not None else c["padding"])
    kept = _kept_after_pad(c.x.shape, pad)
    if kept == c.x.numel:
        return S(f"{c.op} {pad}: the operand is copied whole")
    return K(f"negative padding {pad} crops {c.x.numel - kept} of {c.x.numel} elements")
