"""Rules for calls that read or write entries by index: embedding, gather, index, scatter, masked writes."""

from __future__ import annotations

import torch

from .base import RULES, Call, K, S, TensorInfo, U, Verdict, fmt, meta, promoted, rule


@rule("aten.embedding.default", "aten.gather.default", "aten.index_select.default", "aten.index.Tensor")
def _indexing(c: Call) -> Verdict:
    """In the ids: injective iff the addressed entries differ. In the table: only read entries survive."""
    table = "weight" if c.target == "aten.embedding.default" else "self"
    what = {"index": "advanced indexing"}.get(c.op, c.op)
    ids = {"aten.embedding.default": [c["indices"]], "aten.index.Tensor": c["indices"]}.get(c.target, [c["index"]])
    if any(isinstance(t, TensorInfo) and t.dtype == torch.bool for t in ids):
        return U("boolean-mask indexing: data-dependent output")
    if c.name != table:
        if c.target == "aten.embedding.default":
            return S("embedding lookup: rows selected by ids", f"embedding rows are distinct ({fmt(c[table].shape)})")
        if c[table].dtype == torch.bool and c[table].numel > 2:
            return K(f"{what}: a bool {table} holds at most 2 distinct entries, so ids addressing equal ones collide")
        cond = f"entries of {table} addressed by different ids are distinct"
        return S(f"{what}: ids select entries of {table}", cond)
    if c.target == "aten.embedding.default":
        rows, reads = c.x.shape[0], ids[0].numel
        if reads < rows:
            return K(f"embedding reads at most {reads} of {rows} rows: at least {rows - reads} rows erased")
        return S(f"embedding reads {reads} >= {rows} rows", f"ids cover all {rows} rows")
    n, reads = c.x.numel, meta(c)[0].numel
    if reads < n:
        return K(f"{what} reads at most {reads} of {n} elements: at least {n - reads} erased")
    return S(f"{what} reads {reads} >= {n} elements", f"the ids address every element of {table}")


@rule("aten._embedding_bag.default", primary=(0,))
def _embedding_bag(c: Call) -> Verdict:
    """Each bag sums (mode 0), averages (1) or maxes (2) the rows its ids pick."""
    if c.name == "offsets":
        return K("offsets only regroup ids into bags (piecewise constant in them)")
    if c.name == "per_sample_weights":
        return S("scales each picked row", "picked rows are nonzero and each bag holds one id")
    bags, n_ids = meta(c)[0].shape[0], c["indices"].numel
    if c["mode"] == 2:
        return K("max over each bag's rows: non-maxima erased")
    if c.name == "indices":
        if n_ids > bags:
            return K(f"{n_ids} ids in {bags} bags: ids within a bag can be swapped")
        return S("one id per bag: a lookup", "weight rows are distinct")
    rows = c.x.shape[0]
    if bags < rows:
        return K(f"{bags} bags cannot hold {rows} rows: at least {rows - bags} erased")
    return S(f"{bags} bags of {rows} rows", "the bags' incidence matrix has full column rank (every row in its own bag)")


def _written(c: Call) -> int:
    """How many entries of self a scatter or index_put may overwrite: the number of ids it writes."""
    if c.target == "aten.index_put.default":
        shapes = [t.shape for t in c["indices"] if isinstance(t, TensorInfo)]
        return torch.broadcast_shapes(*shapes).numel() if shapes else c.x.numel
    return c["index"].numel


@rule("aten.scatter.src", "aten.scatter.value", "aten.scatter_add.default", "aten.scatter_reduce.two", "aten.index_put.default")
def _scatter(c: Call) -> Verdict:
    """self: written entries are lost unless accumulated; src/values: written whole when ids are distinct."""
    accumulate = (
        c.target == "aten.scatter_add.default"
        or bool(c["accumulate"])
        or (c.target == "aten.scatter_reduce.two" and c["reduce"] == "sum" and c["include_self"])
    )
    if c.name in ("index", "indices"):
        return U(f"{c.op}: judged in its ids, the result depends on the values written")
    if meta(c)[0].dtype == torch.bool and accumulate:
        return U(f"{c.op} accumulating into bool (logical or) is not modelled")
    if c.name == "self":
        if _written(c) == 0:
            return S(f"{c.op} writes nothing: identity")
        if accumulate:
            return promoted(c, S(f"{c.op} adds into self: a translation"))
        return K(f"{c.op} overwrites up to {_written(c)} entries of self")
    if c.target == "aten.scatter_reduce.two" and c["reduce"] != "sum":
        return K(f"scatter_reduce {c['reduce']}: entries sharing a target are combined")
    if c.target == "aten.index_put.default":
        return U("index_put judged in its values: whether writes collide depends on the ids' values")
    reads = _written(c)
    if reads < c.x.numel:
        return K(f"{c.op} reads {reads} of {c.x.numel} elements of {c.name}")
    if c.x.numel > 1:
        return K(
            f"{c.op}: entries of {c.name} whose ids repeat are {'summed' if accumulate else 'overwritten'} "
            "(injective only if the ids are distinct)"
        )
    return promoted(c, S(f"{c.op}: the one entry of {c.name} is written at its id"))


@rule("aten.select_scatter.default", "aten.slice_scatter.default")
def _slice_scatter(c: Call) -> Verdict:
    if c.name == "src":
        return promoted(c, S(f"{c.op}: src is copied whole into the output"))
    replaced = c["src"].numel
    if replaced == 0:
        return S(f"{c.op} replaces nothing: identity")
    return K(f"{c.op} replaces {replaced} of {c.x.numel} elements of self by src", replaced)


@rule("aten.masked_scatter.default")
def _masked_scatter(c: Call) -> Verdict:
    if c.name == "mask":
        return U("masked_scatter judged in its mask: which source elements land where depends on their values")
    if c.name == "self":
        return K("masked_scatter overwrites self where the mask is True (injective only if it is all False)")
    if c.x.numel == 1:
        return S("masked_scatter copies the one source element", "the mask has a True entry")
    return K(
        f"masked_scatter reads only as many of the {c.x.numel} source elements as the mask has True entries "
        "(injective only if it has at least that many)"
    )


RULES["aten.nonzero.default"] = lambda c: (
    S("nonzero of a bool mask: its True positions are the mask")
    if c.x.dtype == torch.bool
    else K("nonzero keeps the positions of nonzero entries: their values are erased")
)
