"""Rules for linear maps and windows: matmul, linear, convolution, pooling, resampling, distances, FFT."""

from __future__ import annotations

import math

import torch

from .base import RULES, Call, K, S, TensorInfo, U, Verdict, fmt, meta, per_dim, resolve_op, rule


def linmap(k_in: int, k_out: int, unit: str, operand: str) -> Verdict:
    """x -> x A for fixed A (k_in x k_out): rank <= min; injective iff A has full row rank k_in."""
    if k_out < k_in:
        return K(f"rank <= {k_out} < {k_in}: erases {k_in - k_out} dimensions per {unit}", k_in - k_out)
    where = "" if unit == "row" else f" on each {unit}"
    if k_out == k_in:
        return S(f"square linear map {k_in}x{k_in}{where}", f"{operand} is invertible ({k_in}x{k_in})")
    return S(f"up-projection {k_in} -> {k_out}{where}", f"{operand} has full rank {k_in}")


@rule("aten.mm.default", "aten.bmm.default", "aten.matmul.default", "aten.addmm.default")
def _matmul(c: Call) -> Verdict:
    """Each row of the left operand meets every right matrix it is broadcast against (and vice versa)."""
    if c.target == "aten.addmm.default":
        if c.name == "self":
            return K("beta=0: the bias is ignored") if c["beta"] == 0 else S("adds a bias: a translation")
        if c["alpha"] == 0:
            return K("alpha=0: the product is ignored")
    left = "mat1" if c.target == "aten.addmm.default" else "self"
    right = "other" if c.target == "aten.matmul.default" else "mat2"
    a, b = c[left].shape, c[right].shape
    a, b = ((1, *a) if len(a) == 1 else a), ((*b, 1) if len(b) == 1 else b)
    pairs = math.prod(torch.broadcast_shapes(a[:-2], b[:-2]))
    if c.name == left:
        return linmap(a[-1], b[-1] * pairs // math.prod(a[:-2]), "row", "the right operand")
    return linmap(a[-1], a[-2] * pairs // math.prod(b[:-2]), "column", "the left operand")


@rule("aten.linear.default")
def _linear(c: Call) -> Verdict:
    x, w = c["input"], c["weight"]
    if c.name == "bias":
        return S("adds bias (broadcast over rows): a translation")
    if c.name == "input":
        return linmap(w.shape[-1], w.shape[0] if len(w.shape) == 2 else 1, "row", "weight")
    return linmap(x.shape[-1], math.prod(x.shape[:-1]), "weight row", "the input (rows x features)")


def _reach(size: int, out: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """Along one spatial dim: (input positions read, output positions that read at least one input)."""
    read, live = set(), 0
    for o in range(out):
        taps = {o * stride - padding + j * dilation for j in range(kernel)} & set(range(size))
        read |= taps
        live += bool(taps)
    return len(read), live


@rule("aten.convolution.default", "aten.conv2d.default", "aten.conv2d.padding")
def _conv(c: Call) -> Verdict:
    """Per sample a linear map: K if an input position is never read or too few outputs read any input.

    Outputs that read only padding are constant (the bias) and add no rank, so they are not counted.
    """
    if c["transposed"]:
        return U("transposed convolution is not modelled")
    if c.name == "bias":
        return S("adds a per-channel bias: a translation")
    x, w, out = c["input"], c["weight"], meta(c)[0]
    n_sp = len(x.shape) - 2
    stride, dilation, padding = per_dim(c["stride"], n_sp), per_dim(c["dilation"], n_sp), c["padding"]
    if isinstance(padding, str):
        padding = [d * (k - 1) // 2 if padding == "same" else 0 for d, k in zip(dilation, w.shape[2:], strict=True)]
    padding = per_dim(padding, n_sp)
    live = []
    for i in range(n_sp):
        size = x.shape[2 + i]
        read, alive = _reach(size, out.shape[2 + i], w.shape[2 + i], stride[i], padding[i], dilation[i])
        if read < size and c.name == "input":
            return K(
                f"convolution never reads {size - read} of {size} positions along spatial dim {i} "
                f"(stride {stride[i]}, dilation {dilation[i]})"
            )
        live.append(alive)
    if c.name == "weight":
        return linmap(math.prod(w.shape[1:]), out.shape[0] * math.prod(live), "filter", "the input's patch matrix")
    n_in, n_out = math.prod(x.shape[1:]), out.shape[1] * math.prod(live)
    if n_out < n_in:
        return K(
            f"rank <= {n_out} < {n_in}: erases {n_in - n_out} dimensions per sample (outputs reading only padding not counted)",
            n_in - n_out,
        )
    return S(
        f"convolution {fmt(x.shape[1:])} -> {fmt(out.shape[1:])} per sample",
        f"the convolution's linear map has full column rank ({n_out}x{n_in})",
    )


def axis_ranks(target: str, bound: dict, name: str, spatial: int) -> list[tuple[int, int, int]]:
    """(inputs, outputs, rank) of a separable spatial linear op's 1-D matrix along each spatial axis.

    Built by running the op (CPU, float64) on unit vectors along one axis, laid out over channels;
    the other axes hold ones, so their factor only scales the column picked.
    """
    x: TensorInfo = bound[name]
    ndim, found = len(x.shape), []
    channel = ndim - spatial - 1
    for axis in range(ndim - spatial, ndim):
        n = x.shape[axis]
        shape = [1] * ndim
        shape[channel], shape[axis] = n, n
        basis = torch.eye(n, dtype=torch.float64).reshape(shape)
        full = list(shape)
        for other in range(ndim - spatial, ndim):
            full[other] = x.shape[other] if other != axis else n
        args = {k: (basis.expand(full).contiguous() if k == name else v) for k, v in bound.items()}
        out = resolve_op(target)(**args)
        out = out[0] if isinstance(out, (tuple, list)) else out
        index = [0] * ndim
        index[channel], index[axis] = slice(None), slice(None)
        columns = out.abs().amax(dim=[d for d in range(ndim) if d not in (channel, axis)], keepdim=True)
        pick = [int(i) for i in torch.nonzero(columns == columns.max())[0]] if columns.numel() else index
        for other in range(ndim - spatial, ndim):
            if other != axis:
                index[other] = 0 if out.shape[other] == 0 else min(pick[other], out.shape[other] - 1)
        for d in range(channel):
            index[d] = 0
        matrix = out[tuple(index)].reshape(n, -1).T
        rank = int(torch.linalg.matrix_rank(matrix)) if matrix.numel() else 0
        found.append((n, matrix.shape[0], rank))
    return found


_SPATIAL = {
    "avg_pool1d": 1,
    "adaptive_avg_pool1d": 1,
    "avg_pool2d": 2,
    "avg_pool3d": 3,
    "_adaptive_avg_pool2d": 2,
    "_adaptive_avg_pool3d": 3,
    "adaptive_avg_pool2d": 2,
    "upsample_bilinear2d": 2,
    "upsample_nearest2d": 2,
}


@rule(
    *(
        f"aten.{op}.{overload}"
        for op, overload in (
            ("avg_pool1d", "default"),
            ("adaptive_avg_pool1d", "default"),
            ("avg_pool2d", "default"),
            ("avg_pool3d", "default"),
            ("_adaptive_avg_pool2d", "default"),
            ("_adaptive_avg_pool3d", "default"),
            ("adaptive_avg_pool2d", "default"),
            ("upsample_bilinear2d", "vec"),
            ("upsample_nearest2d", "vec"),
        )
    )
)
def _resample(c: Call) -> Verdict:
    """Separable linear maps of the spatial axes: injective iff every axis' 1-D matrix has full column rank."""
    if not c.x.dtype.is_floating_point and c.op.startswith(("avg", "_adaptive", "adaptive", "upsample_bilinear")):
        return K(f"{c.op} of {c.x.dtype}: averages are rounded to integers")
    axes = axis_ranks(c.target, c.bound, c.name, _SPATIAL[c.op])
    n_in, rank = math.prod(a[0] for a in axes), math.prod(a[2] for a in axes)
    shape = "x".join(f"{a[0]}->{a[1]}" for a in axes)
    if rank == n_in:
        return S(f"{c.op} {shape}: every axis' map has full column rank")
    return K(f"{c.op} {shape}: rank {rank} of {n_in} per channel, {n_in - rank} erased", n_in - rank)


@rule("aten.avg_pool2d_backward.default", "aten._adaptive_avg_pool2d_backward.default")
def _pool_backward(c: Call) -> Verdict:
    """The transpose of the forward pool: injective in grad_output iff the pool has full row rank."""
    if c.name != "grad_output":
        return K(f"{c.op} reads only the shape of {c.name}")
    if c.op == "avg_pool2d_backward":
        forward = "aten.avg_pool2d.default"
        bound = {k: v for k, v in c.bound.items() if k != "grad_output"}
    else:
        forward = "aten._adaptive_avg_pool2d.default"
        bound = {"self": c["self"], "output_size": list(c["grad_output"].shape[-2:])}
    axes = axis_ranks(forward, bound, "self", 2)
    n_out, rank = math.prod(a[1] for a in axes), math.prod(a[2] for a in axes)
    if rank == n_out:
        return S(f"{c.op}: the pool has full row rank ({n_out} windows per channel)")
    return K(f"{c.op}: rank {rank} of {n_out} windows per channel", n_out - rank)


@rule("aten.max_pool2d.default", "aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default", primary=(0,))
def _max_pool(c: Call) -> Verdict:
    """Max pooling keeps one value per window: K unless every window is a single element read once."""
    spatial = 3 if "3d" in c.op else 2
    n_in, out = c.x.shape[-spatial:], meta(c)[0].shape[-spatial:]
    k = per_dim(c["kernel_size"], spatial)
    stride = per_dim(c["stride"] or k, spatial)
    if all(v == 1 for v in k) and tuple(n_in) == tuple(out) and all(s == 1 for s in stride):
        return S("1x1 max pool with stride 1: identity")
    return K(f"max over {'x'.join(map(str, k))} windows: {fmt(n_in)} -> {fmt(out)} per channel; non-maxima erased")


@rule("aten.grid_sampler_2d.default")
def _grid_sampler(c: Call) -> Verdict:
    out, x = meta(c)[0], c["input"]
    if c.name == "grid":
        return U("grid_sampler judged in its grid: the result depends on the image content")
    n_in, n_out = math.prod(x.shape[-2:]), math.prod(out.shape[-2:])
    if n_out < n_in:
        return K(f"grid_sampler reads {n_out} sample points of {n_in} pixels: rank <= {n_out}", n_in - n_out)
    return U(
        f"grid_sampler: {n_out} samples of {n_in} pixels; injective iff the grid's interpolation weights "
        "have full column rank, which depends on the grid's values"
    )


@rule("aten.col2im.default")
def _col2im(c: Call) -> Verdict:
    """fold: each patch entry lands on one output pixel; injective iff none overlap and none fall in padding."""
    size = c["output_size"]
    k, d, p, s = (per_dim(c[n], 2) for n in ("kernel_size", "dilation", "padding", "stride"))
    for i in range(2):
        blocks = (size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1
        targets = [o * s[i] - p[i] + j * d[i] for o in range(blocks) for j in range(k[i])]
        inside = [t for t in targets if 0 <= t < size[i]]
        if len(set(inside)) < len(targets):
            return K(
                f"col2im along dim {i}: {len(targets) - len(set(inside))} of {len(targets)} patch entries "
                "overlap or fall in the padding (summed or dropped)"
            )
    return S("col2im: patches tile the output without overlap")


@rule("aten._cdist_forward.default")
def _cdist(c: Call) -> Verdict:
    """Distances from each point to m fixed points in R^d: by trilateration injective iff m >= d+1."""
    other = c["x2"] if c.name == "x1" else c["x1"]
    d, m = c.x.shape[-1], other.shape[-2]
    if c["p"] != 2:
        return U(f"cdist with p={c['p']} is not modelled")
    if m > d:
        return S(f"distances to {m} >= {d}+1 points in R^{d}", "the fixed points are affinely independent")
    return K(f"distances to {m} <= {d} points in R^{d}: the mirror image through their span collides")


RULES["aten._pdist_forward.default"] = lambda c: K("pairwise distances are invariant to translating every row", c.x.shape[-1])


@rule("aten._fft_r2c.default", "aten._fft_c2r.default")
def _fft(c: Call) -> Verdict:
    if c.op == "_fft_c2r":
        return U("complex operands are not modelled")
    return S("real-to-complex DFT: invertible (the one-sided half determines the rest by symmetry)")


@rule(
    "aten.convolution_backward.default",
    "aten.native_layer_norm_backward.default",
    "aten.native_group_norm_backward.default",
    "aten.max_pool2d_with_indices_backward.default",
    "aten.embedding_dense_backward.default",
    primary=(0,),
)
def _backward(c: Call) -> Verdict:
    """Gradients of data-dependent maps: bwsk judges forward programs; these appear only in training graphs."""
    if c.op == "embedding_dense_backward" and c.name == "grad_output":
        rows, ids = c["num_weights"], c["indices"].numel
        if ids > rows:
            return K(f"{ids} ids into {rows} rows: gradients of repeated ids are summed")
    return U(f"{c.op}: the map depends on saved values (ids, statistics, argmax); judge the forward op instead")
