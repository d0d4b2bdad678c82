"""Per-operator rules for the `coordinate` pass: the labels of a call's result, the axes it mixes, what sharding costs.

One rule per op family, registered by target in RULES (ops torch tags pointwise
broadcast). A rule sees a call through a `Site` (arguments by schema name, operand
labels, result type), returns its result's labels and records what the call mixes
and communicates; a form it does not model raises `Unsupported` (the call is then
unknown). The free dimension of a product with a weight is a fresh `hidden`.

A call *mixes* an axis when an output element combines several positions of it
(contraction, reduction, normalisation, softmax, window, scan, gather, pairing),
and *needs communication* under sharding along it when that mixing, or a
selection, crosses block boundaries (a sharded factor is involved): all-reduce,
all-gather, all-to-all (uneven views), halo-exchange (overlapping windows), scan,
broadcast. `settle` keeps an axis sharded in at most one factor per tensor: the
later of two (queries x keys) is gathered, the call pairing positions of that axis.

Each call also records what its backward communicates (`Site.back`), the dual of the
forward: a gather's gradient is reduce-scattered back to the shards, a normalisation or
softmax needs its row sums again, a reduction's or a contraction's all-reduce becomes a
broadcast of a replicated gradient (local), and a column-parallel product, local forward,
all-reduces its input's gradient (a partial sum over the shards of the output features).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from bwsk.ir.types import TensorType, TupleType, Type
from bwsk.passes.coordinate.labels import (
    PAIRS,
    Dim,
    Items,
    Labels,
    Unsupported,
    axes_of,
    axis,
    broadcast,
    drop,
    fill,
    fresh_hidden,
    ints,
    merge,
    plain,
    reshape,
    resize,
    schema,
    sharded_of,
    size_of,
    sizes,
    unlabelled,
)
from bwsk.passes.dataflow import Call, Dataflow

BACKWARD = {
    "all-gather": "reduce-scatter",
    "halo-exchange": "halo-exchange",
    "all-to-all": "all-to-all",
    "scan": "scan",
    "broadcast": "reduce",
}
"""The collective a forward collective's gradient needs; an all-reduce's is none unless a rule says (normalisation)."""


class Site:
    """What a rule sees of one call (arguments by schema name, operand labels, result type), and what it records."""

    def __init__(self, call: Call, flow: Dataflow, labels_of: Callable[[int], Any], replicated: bool = False):
        self.call, self.flow, self.labels_of = call, flow, labels_of
        self.replicated = replicated  # a product with a weight kept whole under hidden sharding (see `split_weight`)
        self.split: str | None = None  # "column" or "row": how hidden sharding splits this call's weight
        params, _ = schema(call.target)
        self.args: dict[str, Any] = {name: default for name, default in params if default is not ...}
        self.args.update({name: value for (name, _), value in zip(params, call.args)})
        self.args.update(call.kwargs)
        keys = [name for name, _ in params[: len(call.args)]] + list(call.kwargs)
        self.operands: dict[str, list[int]] = defaultdict(list)
        for value, position in zip(call.inputs, call.operand_positions):
            self.operands[keys[position]].append(value)
        self.out: Type = flow.values[call.output].type
        self.mixed: dict[str, str] = {}  # axis -> why
        self.comm: dict[str, tuple[str, str]] = {}  # axis -> (kind, why)
        self.back: dict[str, tuple[str, str]] = {}  # axis -> (kind, why) in the backward

    @property
    def first(self) -> Labels:
        return self.labels_of(self.call.inputs[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the (first) tensor result."""
        out = self.out.items[0] if isinstance(self.out, TupleType) else self.out
        if not isinstance(out, TensorType):
            raise Unsupported("a result is not a tensor")
        return out.shape

    def tensor(self, name: str) -> Labels:
        return self.labels_of(self.operands[name][0])

    def tensors(self, name: str) -> list[Labels]:
        return [self.labels_of(v) for v in self.operands[name]]

    def is_weight(self, name: str) -> bool:
        return not self.flow.values[self.operands[name][0]].activation

    def dim(self, rank: int, name: str = "dim") -> int:
        return axis(self.args[name], rank)

    def cost(self, name: str, kind: str, why: str, back: str | None = None) -> None:
        """Sharding along `name` costs `kind` forward and `back` (default: the dual in BACKWARD) backward."""
        self.comm.setdefault(name, (kind, why))
        if back := back or BACKWARD.get(kind):
            self.back.setdefault(name, (back, why))

    def mix(self, dim: Dim, why: str, kind: str | None = "all-reduce", back: str | None = None) -> None:
        """`dim`'s positions are combined; with a `kind`, crossing a shard boundary costs that communication."""
        for f in dim:
            for name in f.axes:
                self.mixed.setdefault(name, why)
            for name in f.sharded if kind else ():
                self.cost(name, kind, why, back)

    def send(self, dim: Dim, why: str, kind: str) -> None:
        """Data of `dim`'s sharded axes moves between shards without being combined."""
        for name in sharded_of(dim):
            self.cost(name, kind, why)

    def outputs(self, main: Labels, extra: Labels | None = None) -> Labels | Items:
        """`main` for a tensor result; for a tuple, `main` first, then `extra` for items of its shape (else unlabelled)."""
        if not isinstance(self.out, TupleType):
            return main
        items = self.out.items[1:]
        fitting = [extra is not None and isinstance(t, TensorType) and sizes(extra) == tuple(t.shape) for t in items]
        return Items((main, *(extra if ok else fill(t) for t, ok in zip(items, fitting))))


def settle(labels: Labels | Items | None, site: Site | None = None) -> Labels | Items | None:
    """Enforce one sharded factor per axis per tensor: later ones are gathered, and `site`'s call pairs positions."""
    if isinstance(labels, Items):
        return Items(tuple(settle(item, site) for item in labels.items))
    seen: set[str] = set()
    out = []
    for dim in labels or ():
        kept = []
        for f in dim:
            for name in f.sharded & seen if site else ():
                site.mixed.setdefault(name, PAIRS)
                site.cost(name, "all-gather", PAIRS)
            kept.append(f._replace(sharded=f.sharded - seen))
            seen |= f.sharded
        out.append(tuple(kept))
    return None if labels is None else tuple(out)


Rule = Callable[[Site], "Labels | Items | None"]
RULES: dict[str, Rule] = {}


def rule(targets: str) -> Callable[[Rule], Rule]:
    """Register a rule for the space-separated targets (`aten.` implied unless they start with `operator.`)."""

    def add(function: Rule) -> Rule:
        RULES.update({t if t.startswith("operator.") else f"aten.{t}": function for t in targets.split()})
        return function

    return add


def pointwise(site: Site) -> Labels:
    return broadcast([found for v in site.call.inputs if isinstance(found := site.labels_of(v), tuple)], site.shape)


@rule("operator.getitem")
def getitem(site: Site) -> Labels | None:
    found = site.labels_of(site.call.inputs[0])
    return found.items[site.call.args[1]] if isinstance(found, Items) else None


@rule(
    "clone.default _to_copy.default alias.default detach.default contiguous.default lift_fresh_copy.default "
    "to.dtype type_as.default tril.default triu.default zeros_like.default ones_like.default empty_like.default "
    "full_like.default fill.Scalar dropout.default native_dropout.default"
)
def same(site: Site) -> Labels | Items:
    return site.outputs(site.first, site.first)


@rule("view.default _unsafe_view.default reshape.default flatten.using_ints unflatten.int")
def view(site: Site) -> Labels | None:
    x = site.first
    found = reshape(x, site.shape)
    if found is None:
        whole = tuple(f for d in x for f in d)
        site.mix(whole, "a view cuts a factor unevenly", "all-to-all")
        return fill(site.out, axes_of(whole))
    return found


@rule("permute.default transpose.int t.default")
def permute(site: Site) -> Labels:
    x = site.first
    order = [axis(d, len(x)) for d in site.args.get("dims", range(len(x)))]
    a, b = (site.dim(len(x), "dim0"), site.dim(len(x), "dim1")) if "dim0" in site.args else (0, len(x) - 1)
    if "dims" not in site.args:
        order[a], order[b] = order[b], order[a]
    return tuple(x[i] for i in order)


@rule("expand.default")
def expand(site: Site) -> Labels:
    x, shape = site.first, site.shape
    lead = len(shape) - len(x)
    return unlabelled(shape[:lead]) + tuple(d if size_of(d) == n else plain(n) for d, n in zip(x, shape[lead:]))


@rule("unsqueeze.default")
def unsqueeze(site: Site) -> Labels:
    x = site.first
    at = site.dim(len(x) + 1)
    return x[:at] + (plain(1),) + x[at:]


@rule("squeeze.dim squeeze.dims squeeze.default")
def squeeze(site: Site) -> Labels:
    x = site.first
    dims = site.args.get("dim", range(len(x)))
    return drop(x, {i for i in (axis(d, len(x)) for d in ([dims] if isinstance(dims, int) else dims)) if size_of(x[i]) == 1})


@rule("slice.Tensor constant_pad_nd.default narrow.default")
def cut(site: Site) -> Labels:
    """Slices and pads keep the layout (uneven shards are not communication); a single position left is a broadcast."""
    x = site.first
    for d, n in zip(x, site.shape):
        if n == 1 < size_of(d):
            site.send(d, "takes single positions", "broadcast")
    return tuple(resize(d, n) for d, n in zip(x, site.shape))


@rule("select.int unbind.int")
def select(site: Site) -> Labels | Items:
    x = site.first
    at = site.dim(len(x))
    if size_of(x[at]) == 1:
        rest = drop(x, {at})
    else:
        site.send(x[at], "takes single positions", "broadcast")
        rest = x[:at] + x[at + 1 :]
    return site.outputs(rest, rest)


@rule("split.Tensor split_with_sizes.default chunk.default")
def split(site: Site) -> Items:
    x = site.first
    at = site.dim(len(x))
    return Items(tuple(x[:at] + (resize(x[at], t.shape[at]),) + x[at + 1 :] for t in site.out.items))


@rule("cat.default")
def cat(site: Site) -> Labels:
    shape = site.shape
    at = site.dim(len(shape))
    parts = [p for p in site.tensors("tensors") if len(p) == len(shape)]  # legacy empty 1-D parts are skipped
    return tuple(merge((p[i] for p in parts if i == at or size_of(p[i]) == n), n) for i, n in enumerate(shape))


@rule("index.Tensor")
def index(site: Site) -> Labels:
    """Advanced indexing by adjacent index tensors: the indexed dimensions are gathered, the index shape takes their place."""
    x, indices = site.first, site.args["indices"]
    where = [i for i, t in enumerate(indices) if t is not None]
    if not where or where != list(range(where[0], where[-1] + 1)) or any(indices[i].dtype == torch.bool for i in where):
        raise Unsupported("index tensors that are not adjacent, or boolean masks")
    for i in where:
        site.mix(x[i], "gathers along it", "all-gather")
    width = len(site.shape) - len(x) + len(where)
    return x[: where[0]] + broadcast(site.tensors("indices"), site.shape[where[0] : where[0] + width]) + x[where[-1] + 1 :]


@rule("gather.default index_select.default")
def gather(site: Site) -> Labels:
    x, positions = site.first, site.tensor("index")
    at = site.dim(len(x))
    site.mix(x[at], "gathers along it", "all-gather")
    if site.call.target == "aten.index_select.default":
        return x[:at] + (positions[0] if positions else plain(1),) + x[at + 1 :]
    return tuple(merge([positions[i]] + ([x[i]] if i != at and size_of(x[i]) == n else []), n) for i, n in enumerate(site.shape))


@rule("embedding.default")
def embedding(site: Site) -> Labels:
    table, ids = site.tensor("weight"), site.tensor("indices")
    if site.is_weight("weight"):
        return ids + (fresh_hidden(size_of(table[-1]), sharded=False),)  # tables are replicated
    site.mix(table[0], "gathers along it", "all-gather")
    return ids + table[1:]


def split_weight(site: Site, contracted: Dim, size: int) -> Dim:
    """The fresh hidden (of `size` features) of a product of an activation with a weight, split as tensor parallelism does.

    Row-parallel when the activation's contracted dimension is cut by hidden shards (the caller costs the all-reduce of
    the partial sums; the result is whole); otherwise column-parallel: the result is cut, and the activation's gradient,
    a sum over the output features, is all-reduced in the backward; or whole when the site is `replicated`.
    """
    if "hidden" in sharded_of(contracted):
        site.split = "row"
        return fresh_hidden(size, sharded=False)
    if site.replicated:
        return fresh_hidden(size, sharded=False)
    site.split = "column"
    site.back.setdefault("hidden", ("all-reduce", "column-parallel product: the input's gradient is a partial sum"))
    return fresh_hidden(size, sharded=True)


def contract(site: Site, x: Labels, y: Labels, x_weight: bool = False, y_weight: bool = False) -> Labels:
    """Labels of x @ y (both at least 2-D, leading dimensions broadcast); a weight's free dimension is a fresh hidden.

    A sharded contracted factor is summed in parts (all-reduce) when the other side is cut alike or is a weight
    (which can be cut to match), and is gathered (all-gather) when the other side holds that axis whole.
    """
    for mine, other in ((x[-1], y[-2]), (y[-2], x[-1])):
        site.mix(mine, "contraction", None)
        for name in sharded_of(mine):
            whole = name in sharded_of(other) or not axes_of(other)
            site.cost(name, "all-reduce" if whole else "all-gather", "contraction")
    rank = max(len(x), len(y)) - 2
    lead = [max(pair) for pair in zip((1,) * (rank + 2 - len(x)) + sizes(x[:-2]), (1,) * (rank + 2 - len(y)) + sizes(y[:-2]))]
    m = split_weight(site, y[-2], size_of(x[-2])) if x_weight else x[-2]
    n = split_weight(site, x[-1], size_of(y[-1])) if y_weight else y[-1]
    return broadcast([x[:-2], y[:-2]], lead) + (m, n)


def product(site: Site, x_name: str, y_name: str, y_transposed: bool = False) -> Labels:
    """`contract` for the matmul family, with 1-D operands promoted and their dimension dropped as torch does."""
    x, y = site.tensor(x_name), site.tensor(y_name)
    y = y[:-2] + (y[-1], y[-2]) if y_transposed and len(y) > 1 else y
    vx, vy = len(x) == 1, len(y) == 1
    out = contract(site, (plain(1),) + x if vx else x, y + (plain(1),) if vy else y, site.is_weight(x_name), site.is_weight(y_name))
    out = out[:-1] if vy else out
    return out[:-2] + out[-1:] if vx else out


@rule("mm.default bmm.default matmul.default mv.default dot.default")
def matmul(site: Site) -> Labels:
    return product(site, "self", next(name for name in ("mat2", "other", "vec", "tensor") if name in site.operands))


@rule("addmm.default baddbmm.default addmv.default")
def add_product(site: Site) -> Labels:
    x, y = next(pair for pair in (("mat1", "mat2"), ("batch1", "batch2"), ("mat", "vec")) if pair[0] in site.operands)
    return broadcast([product(site, x, y), site.tensor("self")], site.shape)


@rule("linear.default")
def linear(site: Site) -> Labels:
    return broadcast([product(site, "input", "weight", y_transposed=True), *site.tensors("bias")], site.shape)


def window(site: Site, dim: Dim, out: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
    """Sliding a window along `dim`: overlapping windows trade halos; tiling ones stay local unless one covers it all."""
    if kernel == 1:
        return
    if kernel == stride and padding == 0 and dilation == 1:
        site.mix(dim, "one window covers it" if out == 1 else "windows tile it", "all-reduce" if out == 1 else None)
    else:
        site.mix(dim, "overlapping windows", "halo-exchange")


@rule(
    "convolution.default conv1d.default conv2d.default conv3d.default "
    "conv_transpose1d.default conv_transpose2d.input conv_transpose3d.input"
)
def convolution(site: Site) -> Labels:
    """Channels are contracted (within groups: local when shards hold whole groups); space is windowed."""
    x, kernel, shape, groups = site.first, site.args["weight"].shape, site.shape, site.args["groups"]
    if isinstance(site.args["padding"], str):
        raise Unsupported("padding given by name")
    stride, padding, dilation = (ints(site.args[k], len(x) - 2) for k in ("stride", "padding", "dilation"))
    transposed = site.args.get("transposed", "transpose" in site.call.target)
    if (kernel[0] // groups if transposed else kernel[1]) > 1:  # input channels per group
        site.mix(x[1], "contraction over channels", "all-reduce" if groups == 1 else None)
    for j in range(len(x) - 2):
        window(site, x[2 + j], shape[2 + j], kernel[2 + j], stride[j], padding[j], dilation[j])
    channels = split_weight(site, x[1], shape[1]) if groups == 1 else resize(x[1], shape[1])
    return (x[0], channels) + tuple(resize(d, n) for d, n in zip(x[2:], shape[2:]))


@rule(
    "max_pool2d_with_indices.default max_pool3d_with_indices.default max_pool1d.default max_pool2d.default "
    "avg_pool1d.default avg_pool2d.default avg_pool3d.default _adaptive_avg_pool2d.default "
    "adaptive_avg_pool2d.default adaptive_max_pool2d.default"
)
def pool(site: Site) -> Labels | Items:
    """Pooling windows over the trailing dimensions (adaptive ones tile when the sizes divide, else overlap)."""
    x, shape = site.first, site.shape
    if "output_size" in site.args:
        n = len(site.args["output_size"])
        whole = sizes(x[-n:])
        kernel, stride = [-(-a // b) for a, b in zip(whole, shape[-n:])], [a // b for a, b in zip(whole, shape[-n:])]
        padding, dilation = [0] * n, [1] * n
    else:
        kernel = list(site.args["kernel_size"])
        n = len(kernel)
        stride = ints(site.args["stride"] or kernel, n)
        padding, dilation = ints(site.args["padding"], n), ints(site.args.get("dilation", 1), n)
    lead = len(x) - n
    for j in range(n):
        window(site, x[lead + j], shape[lead + j], kernel[j], stride[j], padding[j], dilation[j])
    out = x[:lead] + tuple(resize(d, m) for d, m in zip(x[lead:], shape[lead:]))
    return site.outputs(out, out)


@rule("native_layer_norm.default layer_norm.default rms_norm.default _fused_rms_norm.default")
def layer_norm(site: Site) -> Labels | Items:
    x, k = site.first, len(site.args["normalized_shape"])
    for dim in x[len(x) - k :]:
        site.mix(dim, "normalisation", back="all-reduce")
    return site.outputs(x, x[: len(x) - k] + unlabelled([1] * k))


@rule("native_group_norm.default group_norm.default")
def group_norm(site: Site) -> Labels | Items:
    """Statistics per (sample, group): channels mix within a group (local when shards hold whole groups), space fully."""
    x = site.first
    groups = site.args.get("group", site.args.get("num_groups"))
    site.mix(x[1], "group normalisation", "all-reduce" if groups == 1 else None, back="all-reduce")
    for dim in x[2:]:
        site.mix(dim, "group normalisation", back="all-reduce")
    return site.outputs(x, (x[0], plain(groups)))


@rule(
    "_native_batch_norm_legit_no_training.default _batch_norm_no_update.default _native_batch_norm_legit.default "
    "native_batch_norm.default _native_batch_norm_legit_functional.default batch_norm.default "
    "_batch_norm_with_update.default"
)
def batch_norm(site: Site) -> Labels | Items:
    """Running statistics are per channel (positionwise); batch statistics mix every dimension but the channels."""
    x = site.first
    if site.args.get("training", site.call.target.endswith(("_legit.default", "_functional.default", "_with_update.default"))):
        for dim in x[:1] + x[2:]:
            site.mix(dim, "batch statistics", back="all-reduce")
    return site.outputs(x)


@rule("_softmax.default _log_softmax.default softmax.int log_softmax.int _safe_softmax.default")
def softmax(site: Site) -> Labels:
    x = site.first
    site.mix(x[site.dim(len(x))], "softmax", back="all-reduce")
    return x


@rule(
    "sum.default sum.dim_IntList mean.default mean.dim amax.default amin.default max.default min.default max.dim min.dim "
    "argmax.default argmin.default var.correction var.dim std.correction std.dim var_mean.correction prod.default "
    "prod.dim_int logsumexp.default any.default any.dim any.dims all.default all.dim all.dims linalg_vector_norm.default"
)
def reduce(site: Site) -> Labels | Items:
    x = site.first
    dims = site.args.get("dim")
    dims = range(len(x)) if dims is None or dims == [] else [dims] if isinstance(dims, int) else dims
    gone = {axis(d, len(x)) for d in dims}
    for i in gone:
        site.mix(x[i], "reduction")
    keep = len(site.shape) == len(x)
    out = tuple(plain(1) if i in gone else d for i, d in enumerate(x) if keep or i not in gone)
    return site.outputs(out, out)


@rule("cumsum.default cumprod.default cummax.default cummin.default logcumsumexp.default")
def scan(site: Site) -> Labels | Items:
    x = site.first
    site.mix(x[site.dim(len(x))], "scan", "scan")
    return site.outputs(x, x)


@rule(
    "scaled_dot_product_attention.default _scaled_dot_product_flash_attention_for_cpu.default "
    "_scaled_dot_product_efficient_attention.default _scaled_dot_product_flash_attention.default"
)
def attention(site: Site) -> Labels | Items:
    """softmax(q @ k^T) @ v, as the decomposed ops are labelled (the mask is positionwise)."""
    q, k, v = site.tensor("query"), site.tensor("key"), site.tensor("value")
    scores = settle(contract(site, q, k[:-2] + (k[-1], k[-2])), site)
    site.mix(scores[-1], "softmax", back="all-reduce")
    out = settle(contract(site, scores, v), site)
    return site.outputs(out, out[:-1])
