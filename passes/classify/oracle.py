"""Numerical verification of an injectivity verdict on small random operands.

Invariants:
- An S verdict is confirmed by a full-rank Jacobian of the judged outputs in the varying operand
  and no collision found by the searches below (float operands), or, for integer/bool operands,
  by every single-element change altering the output.
- A K verdict is confirmed only by a witness: two different inputs whose outputs are equal (within a
  tolerance scaled to their distance), found along a Jacobian null direction, by perturbing one
  element, by a collision of the scalar map (elementwise ops), or by changing one integer element.
- Operands are drawn to satisfy the verdict's condition: its `domain` (log: self > 0) and covering
  index patterns. Floats are float64 unless a dtype in the call makes precision part of the
  question or integer operands are mixed in (int64 x float32 is judged in float32, as the model runs it).
- The Jacobian is taken in at most MAX_JACOBIAN_COLUMNS elements of the varying operand (the
  leading ones in memory order, so whole rows; named in the evidence): a null direction there is a witness for K; full rank there is
  necessary, not sufficient, for S, so larger operands are confirmed on a sample.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bwsk.errors import first_line
from bwsk.passes.classify.rules import (
    TensorInfo,
    Verdict,
    bind_arguments,
    operand_name,
    primary_outputs,
    resolve_op,
)


@dataclass(frozen=True)
class CheckResult:
    """Whether the numbers agree with the verdict, and the evidence either way.

    `decided` is False when the numerics themselves failed (an SVD that did not converge): neither
    confirmed nor refuted.
    """

    ok: bool
    evidence: str
    decided: bool = True


_CASTS = {"aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten._assert_tensor_metadata.default"}
MAX_JACOBIAN_COLUMNS = 256  # larger operands are checked on a random subset of their elements
_INDEXED = {
    "aten.embedding.default": "weight",
    "aten.gather.default": "self",
    "aten.index_select.default": "self",
    "aten.index.Tensor": "self",
}
_RTOL = {torch.float64: 1e-9, torch.float32: 1e-5}


def _rtol(*dtypes: torch.dtype) -> float:
    """Relative tolerance of the least precise float dtype involved."""
    return max(_RTOL.get(d, 1e-2) for d in dtypes if d.is_floating_point)


def _index_bounds(target: str, bound: dict[str, Any]) -> dict[tuple[str, int | None], tuple[int, int | None]]:
    """(operand, list item) -> (exclusive upper bound of valid ids, dim of the indexed tensor it walks)."""
    if target == "aten.embedding.default":
        return {("indices", None): (bound["weight"].shape[0], None)}
    if target == "aten.embedding_dense_backward.default":
        return {("indices", None): (bound["num_weights"], None)}
    if target in (
        "aten.gather.default",
        "aten.index_select.default",
        "aten.scatter.src",
        "aten.scatter.value",
        "aten.scatter_add.default",
        "aten.scatter_reduce.two",
    ):
        dim = bound["dim"] % len(bound["self"].shape)
        return {("index", None): (bound["self"].shape[dim], dim)}
    if target == "aten.index.Tensor":
        return {("indices", j): (bound["self"].shape[j], j) for j, t in enumerate(bound["indices"]) if isinstance(t, TensorInfo)}
    return {}


def _covering(target: str, bound: dict[str, Any], info: TensorInfo, high: int, dim: int | None, item: int | None) -> torch.Tensor:
    """Deterministic ids that read every entry of the indexed tensor whenever the shapes allow it."""
    if target == "aten.gather.default":
        line = torch.arange(info.shape[dim]) % high
        view = [1] * len(info.shape)
        view[dim] = info.shape[dim]
        return line.view(view).expand(info.shape).clone()
    if target != "aten.index.Tensor":
        return (torch.arange(info.numel) % high).view(info.shape)
    tensors = [(j, t) for j, t in enumerate(bound["indices"]) if isinstance(t, TensorInfo)]
    shape = torch.broadcast_shapes(*(t.shape for _, t in tensors))
    sizes = [bound["self"].shape[j] for j, _ in tensors]
    flat = torch.arange(math.prod(shape)) % math.prod(sizes)
    wanted = torch.stack(torch.unravel_index(flat, sizes)).view(len(sizes), *shape)
    k = [j for j, _ in tensors].index(item)
    padded = (1,) * (len(shape) - len(info.shape)) + info.shape
    picked = wanted[k][tuple(slice(None) if n > 1 else slice(0, 1) for n in padded)]
    return picked.reshape(info.shape)


class _Harness:
    """Concrete operands for one call, and the op evaluated with the varying operand replaced."""

    def __init__(
        self,
        target: str,
        args: tuple,
        kwargs: dict,
        varying: int,
        item: int | None,
        outputs: tuple[int, ...] | None,
        seed: int,
        domain: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.op = resolve_op(target)
        self.varying, self.item, self.seed = varying, item, seed
        self.outputs = outputs or primary_outputs(target)
        bound = bind_arguments(target, args, kwargs)
        bounds = _index_bounds(target, bound)
        covering = _INDEXED.get(target) == operand_name(target, varying)
        distinct = target in _INDEXED and not covering
        has_dtype = any(isinstance(v, torch.dtype) for v in (*args, *kwargs.values()))
        dtypes = {t.dtype for t in _infos((args, kwargs))}
        floats = {d for d in dtypes if d.is_floating_point}
        one_float = len(floats) <= 1 and floats <= {torch.float32, torch.float64} and not (dtypes - floats - {torch.bool})
        upcast = target not in _CASTS and not has_dtype and one_float  # int x float stays in the model's float dtype
        domains = dict(domain)
        gen = torch.Generator().manual_seed(seed)

        def make(info: TensorInfo, name: str | None, item: int | None) -> torch.Tensor:
            if (name, item) in bounds:
                high, dim = bounds[(name, item)]
                if covering:
                    return _covering(target, bound, info, high, dim, item)
                return torch.randint(0, high, info.shape, generator=gen, dtype=info.dtype)
            if distinct and name == _INDEXED[target] and not info.dtype.is_floating_point:
                return torch.randperm(info.numel, generator=gen).view(info.shape).to(info.dtype)
            if info.dtype == torch.bool:
                return torch.rand(info.shape, generator=gen) < 0.5
            if info.dtype.is_complex:
                return torch.randn(info.shape, generator=gen, dtype=torch.complex128).to(info.dtype)
            if not info.dtype.is_floating_point:
                low = 0 if torch.iinfo(info.dtype).min == 0 else -3
                x = torch.randint(low, 4, info.shape, generator=gen, dtype=info.dtype)
                return in_domain(x, domains.get(name)) if name in domains else x
            x = in_domain(torch.randn(info.shape, generator=gen, dtype=torch.float64), domains.get(name))
            return x if upcast else x.to(info.dtype)

        def lift(v: Any, name: str | None) -> Any:
            if isinstance(v, TensorInfo):
                return make(v, name, None)
            if isinstance(v, torch.device) or (name == "device" and v is not None):
                return torch.device("cpu")  # traced calls carry device=meta; the check runs on the CPU
            if isinstance(v, (list, tuple)):
                return [make(u, name, j) if isinstance(u, TensorInfo) else u for j, u in enumerate(v)]
            return v

        self.args = [lift(a, operand_name(target, i)) for i, a in enumerate(args)]
        self.kwargs = {k: lift(v, k) for k, v in kwargs.items()}
        slot = self.args[varying]
        self.x: torch.Tensor = slot[item] if item is not None else slot

    def raw(self, x: torch.Tensor) -> Any:
        """The op's full result with the varying operand set to x (fresh copies, fixed RNG)."""
        args = [_clone(a) for a in self.args]
        if self.item is None:
            args[self.varying] = x
        else:
            args[self.varying][self.item] = x
        torch.default_generator.manual_seed(self.seed)  # random ops (dropout) draw the same mask each call
        return self.op(*args, **{k: _clone(v) for k, v in self.kwargs.items()})

    def __call__(self, x: torch.Tensor) -> list[Any]:
        """The judged outputs."""
        out = self.raw(x)
        if not isinstance(out, (list, tuple)):
            return [out]
        return [out[i] for i in (self.outputs or range(len(out)))]


def in_domain(x: torch.Tensor, domain: str | None) -> torch.Tensor:
    """Random values moved into a verdict's domain (see rules.base.DOMAINS); integers stay integers."""
    if domain is None or x.dtype == torch.bool:
        return x
    magnitude = x.abs() + (1 if not x.is_floating_point() else 0.5)
    moved = {
        "positive": magnitude,
        "negative": -magnitude,
        "nonzero": torch.where(x < 0, -magnitude, magnitude),
        "above_one": magnitude + 1,
        "above_minus_one": magnitude - (1 if not x.is_floating_point() else 0.9),
        "open_unit": torch.tanh(x) * 0.9 if x.is_floating_point() else x.clamp(0, 0),
    }[domain]
    return moved.to(x.dtype)


def _infos(v: Any) -> list[TensorInfo]:
    if isinstance(v, TensorInfo):
        return [v]
    if isinstance(v, dict):
        v = list(v.values())
    return [t for u in v for t in _infos(u)] if isinstance(v, (list, tuple)) else []


def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.clone()
    return [_clone(u) for u in v] if isinstance(v, list) else v


def _same(a: list[Any], b: list[Any], atol: float) -> bool:
    """Outputs equal: tensors within atol (nan == nan), anything else by ==."""
    for u, v in zip(a, b, strict=True):
        if isinstance(u, torch.Tensor):
            if u.shape != v.shape or u.dtype != v.dtype:
                return False
            close = u.is_floating_point() and torch.allclose(u, v, rtol=0, atol=atol, equal_nan=True)
            if not (torch.equal(u, v) or close):
                return False
        elif u != v:
            return False
    return True


def _flat_float(values: list[Any]) -> list[torch.Tensor]:
    """Float outputs as flat real tensors: complex ones as (re, im) pairs, Python numbers as 1-element tensors."""
    found = []
    for v in values:
        if isinstance(v, float):
            v = torch.tensor([v], dtype=torch.float64)
        if isinstance(v, torch.Tensor) and v.is_complex():
            v = torch.view_as_real(v)
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            found.append(v.reshape(-1))
    return found


def _jacobian(h: _Harness, x: torch.Tensor, columns: torch.Tensor, numeric: bool = False) -> tuple[torch.Tensor, float]:
    """Jacobian of the judged float outputs in the elements `columns` of x (outputs x columns), and its rank tolerance.

    Vectorised autograd unless `numeric` or the op is not differentiable in x; else central
    differences, which also see outputs autograd treats as constant (layer norm's mean and rstd, detach).
    """
    outs = _flat_float(h(x))
    flat = x.reshape(-1)

    def f(z: torch.Tensor) -> torch.Tensor:
        moved = flat.index_put((columns,), z).view(x.shape)
        parts = [p.to(torch.float64) for p in _flat_float(h(moved))]
        return torch.cat(parts) if parts else z.new_zeros(0, dtype=torch.float64)

    rtol = _rtol(x.dtype, *(o.dtype for o in outs))
    z = flat[columns].clone()
    if f(z).numel() == 0:
        return x.new_zeros(0, columns.numel(), dtype=torch.float64), rtol
    try:
        if numeric or not f(z.detach().requires_grad_()).requires_grad:
            raise RuntimeError("central differences requested")
        return torch.autograd.functional.jacobian(f, z, vectorize=True).reshape(-1, z.numel()).to(torch.float64), rtol
    except RuntimeError:
        step = 1e-6 * max(1.0, float(z.abs().max()))
        basis = torch.eye(z.numel(), dtype=z.dtype)
        jac = torch.stack([(f(z + step * e) - f(z - step * e)) / (2 * step) for e in basis], dim=1)
        return jac, max(rtol, 1e-6)


NULL_DIRECTIONS = 4  # how many null directions `_null_step` tries


def _rank(jac: torch.Tensor, rtol: float) -> tuple[int, torch.Tensor]:
    """Numerical rank and orthonormal rows spanning (part of) the right null space.

    Without a full SVD: a wide Jacobian's null space is reached by projecting a few fixed random
    directions off its row space (the reduced SVD's rows), which costs a fraction of the full V.
    """
    n = jac.shape[1]
    jac = jac[(jac != 0).any(1)]  # outputs these columns do not reach change neither the rank nor the null space
    if jac.numel() == 0:
        return 0, torch.eye(n, dtype=torch.float64)
    _, s, vh = torch.linalg.svd(jac, full_matrices=False)
    rank = int((s > rtol * s.max()).sum()) if s.max() > 0 else 0
    if rank == n:
        return rank, vh.new_zeros(0, n)
    if vh.shape[0] == n:  # square or tall: the reduced SVD already holds the null space
        return rank, vh[rank:]
    drawn = torch.randn(NULL_DIRECTIONS, n, generator=torch.Generator().manual_seed(0), dtype=vh.dtype)
    rows = vh[:rank]
    drawn = drawn - (drawn @ rows.T) @ rows
    drawn = drawn - (drawn @ rows.T) @ rows  # twice: orthogonal to working precision
    return rank, torch.linalg.qr(drawn.T).Q.T


def _null_step(h: _Harness, x: torch.Tensor, columns: torch.Tensor, jac: torch.Tensor, null: torch.Tensor, rtol: float) -> str | None:
    """A witness near a null direction: x and x + t v, pulled back onto x's level set by Gauss-Newton steps
    in the Jacobian's row space (curved level sets: prod, variance), outputs equal within rtol * t."""
    base = h(x)
    if not _flat_float(base):
        return None
    target = torch.cat([o.to(torch.float64) for o in _flat_float(base)])
    pinv = None  # computed when a step first needs pulling back: a linear map's null direction never does
    for v, t in itertools.product(null[:4], (1e-1, 1e-2, 1e-3)):
        z = x.reshape(-1).to(torch.float64)[columns] + t * v
        for _ in range(6):
            moved = x.reshape(-1).index_put((columns,), z.to(x.dtype)).view(x.shape)
            if moved.is_floating_point() and _same(base, h(moved), atol=rtol * t):
                if not torch.equal(moved, x):
                    return f"witness: inputs {t:.0e} apart near a null direction, outputs equal within {rtol * t:.0e}"
                break
            now = torch.cat([o.to(torch.float64) for o in _flat_float(h(moved))])
            if now.shape != target.shape or not torch.isfinite(now).all():
                break
            pinv = torch.linalg.pinv(jac) if pinv is None else pinv
            z = z - pinv @ (now - target)
    return None


def _perturb(h: _Harness, x: torch.Tensor, gen: torch.Generator, steps: tuple[float, ...]) -> str | None:
    """A witness by moving one element by relative steps: two of the moved inputs (or one and x) give identical outputs."""
    flat = x.reshape(-1)
    base = h(x)
    finite = sum(int(torch.isfinite(v).sum()) for v in _flat_float(base))
    for pos in torch.randperm(x.numel(), generator=gen)[:16].tolist():
        seen: list[tuple[torch.Tensor, list[Any]]] = [(flat, base)]
        for rel, sign in itertools.product(steps, (1, -1)):
            moved = flat.clone()
            moved[pos] += sign * rel * max(1.0, abs(float(flat[pos])))
            out = h(moved.view(x.shape))
            if sum(int(torch.isfinite(v).sum()) for v in _flat_float(out)) < finite:
                continue  # left the op's domain: nan or inf is no collision
            for earlier, earlier_out in seen:
                if not torch.equal(moved, earlier) and _same(earlier_out, out, atol=0):
                    return f"witness: element {pos} set to {float(earlier[pos]):.3g} or {float(moved[pos]):.3g}, outputs identical"
            seen.append((moved, out))
    return None


def _bisect(g: Callable[[float], float], lo: float, hi: float, level: float) -> float:
    below = g(lo) < level
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (g(mid) < level) == below else (lo, mid)
    return (lo + hi) / 2


def _scalar_collision(h: _Harness, x: torch.Tensor, rtol: float, crossings: bool = True) -> str | None:
    """For an elementwise map: two scalars with equal images (either side of an extremum; with `crossings`, also a
    level met again far away, as in periodic or sawtooth maps), tried in place."""
    grid = torch.linspace(-8, 8, 4001, dtype=x.dtype)
    try:
        values = h.raw(grid)
    except (RuntimeError, ValueError, TypeError, IndexError):
        return None
    if not isinstance(values, torch.Tensor) or values.shape != grid.shape or not values.is_floating_point():
        return None
    d = torch.diff(values.to(torch.float64))
    noise = 1e3 * torch.finfo(values.dtype).eps * float(values.abs().max())
    turns = torch.nonzero((d[:-1] * d[1:] < 0) & (d[:-1].abs() > noise) & (d[1:].abs() > noise)).reshape(-1)
    if turns.numel() == 0:
        return _level_crossing(h, x, grid, values.to(torch.float64), rtol) if crossings else None
    i = int(turns[0]) + 1
    left, right = i - 1, i + 1
    while left > 0 and i - left < 200 and d[left - 1] * d[i - 1] > 0:
        left -= 1
    while right < len(d) and right - i < 200 and d[right] * d[i] > 0:
        right += 1

    def g(s: float) -> float:
        return float(h.raw(torch.tensor([s], dtype=x.dtype))[0])

    lo, mid, hi = float(grid[left]), float(grid[i]), float(grid[right])
    near = min(g(lo), g(hi), key=lambda v: abs(v - g(mid)))
    level = g(mid) + 0.5 * (near - g(mid))
    a, b = _bisect(g, lo, mid, level), _bisect(g, mid, hi, level)
    x1, x2 = x.clone().reshape(-1), x.clone().reshape(-1)
    x1[0], x2[0] = a, b
    if _same(h(x1.view(x.shape)), h(x2.view(x.shape)), atol=rtol * abs(a - b)):
        return f"witness: element 0 set to {a:.4f} or {b:.4f}, outputs equal within {rtol * abs(a - b):.0e}"
    return _level_crossing(h, x, grid, values.to(torch.float64), rtol) if crossings else None


def _level_crossing(h: _Harness, x: torch.Tensor, grid: torch.Tensor, values: torch.Tensor, rtol: float) -> str | None:
    """For a monotone-by-pieces scalar map (tan, fmod): the level of one grid point crossed again far away."""
    step = float(grid[1] - grid[0])
    jumps = torch.diff(values).abs()
    smooth = jumps < 20 * float(jumps.median()) + 1e-12
    for i in range(0, len(grid), 97):
        level = values[i]
        crossing = (values[:-1] - level) * (values[1:] - level) <= 0
        far = (torch.arange(len(grid) - 1) - i).abs() * step > 0.5
        found = torch.nonzero(crossing & far & smooth).reshape(-1)
        if found.numel() == 0:
            continue
        j = int(found[0])

        def g(s: float) -> float:
            return float(h.raw(torch.tensor([s], dtype=x.dtype))[0])

        b = _bisect(g, float(grid[j]), float(grid[j + 1]), float(level))
        x1, x2 = x.clone().reshape(-1), x.clone().reshape(-1)
        x1[0], x2[0] = grid[i], b
        if _same(h(x1.view(x.shape)), h(x2.view(x.shape)), atol=rtol * max(1.0, abs(float(level)))):
            return f"witness: element 0 set to {float(grid[i]):.4f} or {b:.4f}, outputs equal"
    return None


def _int_candidates(x: torch.Tensor, high: int | None) -> list[int | bool]:
    if x.dtype == torch.bool:
        return [False, True]
    if high is not None:
        return list(range(min(high, 12)))
    info = torch.iinfo(x.dtype)
    small = list(range(0 if info.min == 0 else -3, 4))
    big = [v for p in (8, 11, 24, 53) for v in (2**p, 2**p + 1) if v <= info.max // 4]
    return small + big


def _int_pairs(h: _Harness, x: torch.Tensor, high: int | None, gen: torch.Generator, want_collision: bool) -> CheckResult:
    """Set one element to a then b: S needs every pair to differ, K one equal pair.

    Every position (up to 4096, in random order) is tried with the first pair, six random positions with all pairs.
    """
    flat, checked = x.reshape(-1), 0
    values = _int_candidates(x, high)
    if len(values) <= 8:
        pairs = list(itertools.combinations(values, 2))
    else:  # neighbours and next-but-one neighbours: covers the rounding pairs 2^p, 2^p + 1
        pairs = [*zip(values, values[1:], strict=False), *zip(values, values[2:], strict=False)]
        # pairs equal modulo 2^bits: what a narrowing integer cast wraps together
        if x.dtype != torch.bool and high is None:
            pairs += [(1, 1 + 2**bits) for bits in (8, 16, 32) if torch.iinfo(x.dtype).max > 2 ** (bits + 1)]
    trials = [(pos, pairs[0]) for pos in torch.randperm(x.numel(), generator=gen)[:4096].tolist()]
    trials += [(pos, p) for pos in torch.randperm(x.numel(), generator=gen)[:6].tolist() for p in pairs[1:]]
    for pos, (a, b) in trials:
        xa, xb = flat.clone(), flat.clone()
        xa[pos], xb[pos] = a, b
        checked += 1
        if _same(h(xa.view(x.shape)), h(xb.view(x.shape)), atol=0):
            return CheckResult(want_collision, f"witness: element {pos} set to {a} or {b}, outputs identical")
    if want_collision:
        witness = _two_element_collision(h, x, gen)
        if witness:
            return CheckResult(True, witness)
        return CheckResult(False, f"no collision among {checked} single-element changes or swaps")
    return CheckResult(True, f"all {checked} single-element changes alter the output")


def _two_element_collision(h: _Harness, x: torch.Tensor, gen: torch.Generator) -> str | None:
    """Two elements changed together (one up and one down by 1, or swapped) with identical outputs: sums, sorts."""
    flat, base = x.reshape(-1), h(x)
    if x.numel() < 2:
        return None
    for _ in range(64):
        i, j = torch.randperm(x.numel(), generator=gen)[:2].tolist()
        swapped = flat.clone()
        swapped[i], swapped[j] = flat[j], flat[i]
        candidates = [swapped]
        if x.dtype != torch.bool:
            shifted = flat.clone()
            shifted[i] += 1
            shifted[j] -= 1
            candidates.append(shifted)
        for moved in candidates:
            if not torch.equal(moved, flat) and _same(base, h(moved.view(x.shape)), atol=0):
                return f"witness: elements {i} and {j} changed together, outputs identical"
    return None


def _check_float(h: _Harness, verdict: Verdict, gen: torch.Generator) -> CheckResult:
    x = h.x
    n = x.numel()
    columns = torch.arange(min(n, MAX_JACOBIAN_COLUMNS))  # leading elements: whole rows, so row-wise null directions fit
    m = columns.numel()
    where = "" if m == n else f" on {m} of {n} elements"
    jac, rtol = _jacobian(h, x, columns)
    rank, null = _rank(jac, rtol)
    if verdict.kind == "S":
        if not all(torch.isfinite(v).all() for v in _flat_float(h(x))):
            return CheckResult(False, "outputs are not finite on the sampled operands")
        if rank < m:
            rank, _ = _rank(*_jacobian(h, x, columns, numeric=True))
        if rank < m:
            return CheckResult(False, f"jacobian rank {rank}/{m} < {m}{where}")
        witness = _perturb(h, x, gen, (1e-6, 1e-3, 0.3, 3.0)) or _scalar_collision(h, x, rtol, crossings=False)
        if witness:
            return CheckResult(False, f"jacobian rank {m}/{m}{where} but {witness}")
        return CheckResult(True, f"jacobian rank {m}/{m}{where}; no collision found")
    steps = (1e-12, 1e-9, 1e-6, 1e-3, 0.3, 3.0, 30.0)
    witness = (rank < m and _null_step(h, x, columns, jac, null, rtol)) or _perturb(h, x, gen, steps) or _scalar_collision(h, x, rtol)
    if not witness and rank == m < n:  # a global rank deficit (a down-projection) needs every column to show
        columns, m, where = torch.arange(n), n, ""
        jac, rtol = _jacobian(h, x, columns)
        rank, null = _rank(jac, rtol)
        witness = rank < m and _null_step(h, x, columns, jac, null, rtol)
    if witness:
        return CheckResult(True, f"jacobian rank {rank}/{m}{where}; {witness}")
    return CheckResult(False, f"no witness found (jacobian rank {rank}/{m}{where})")


def check(
    target: str,
    args: tuple,
    kwargs: dict,
    varying: int,
    verdict: Verdict,
    *,
    seed: int = 0,
    varying_item: int | None = None,
    outputs: tuple[int, ...] | None = None,
) -> CheckResult:
    """Confirm `verdict` for `target` in operand `args[varying]` on random operands of the given types.

    Runs single-threaded (the operands are tiny; thread pools only contend). The global RNG
    (reseeded per evaluation so random ops repeat) and the thread count are restored on return.
    """
    if verdict.kind not in ("S", "K"):
        return CheckResult(False, "no rule")
    if not _infos((args, kwargs)):
        return CheckResult(verdict.kind == "S", "constant: no tensor input, nothing to invert")
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(target, args, kwargs, varying, verdict, seed, varying_item, outputs)
    except torch.linalg.LinAlgError as error:
        return CheckResult(False, f"undecided: {first_line(error)[:120]}", decided=False)
    except (
        RuntimeError,
        ValueError,
        TypeError,
        ZeroDivisionError,
        IndexError,
        NotImplementedError,
    ) as error:  # the op rejects the drawn operands
        return CheckResult(False, f"undecided: the op rejects random operands ({first_line(error)[:120]})", decided=False)
    finally:
        torch.set_rng_state(state)
        torch.set_num_threads(threads)


def _run(
    target: str,
    args: tuple,
    kwargs: dict,
    varying: int,
    verdict: Verdict,
    seed: int,
    varying_item: int | None,
    outputs: tuple[int, ...] | None,
) -> CheckResult:
    key = (operand_name(target, varying), varying_item)
    high = _index_bounds(target, bind_arguments(target, args, kwargs)).get(key, (None, None))[0]
    result = CheckResult(False, "not run")
    # K: a witness under any of a few operand draws; conditional S: full rank under any draw (the condition may fail for one)
    for attempt in range(1 if verdict.kind == "S" and not verdict.condition else 4):
        h = _Harness(target, args, kwargs, varying, varying_item, outputs, seed + attempt, verdict.domain)
        if not isinstance(h.x, torch.Tensor):
            return CheckResult(False, "the varying operand is not a tensor (name a list item with varying_item)")
        if h.x.numel() == 0:
            return CheckResult(verdict.kind == "S", "empty operand: trivially injective")
        gen = torch.Generator().manual_seed(seed + attempt + 1)
        if h.x.is_floating_point():
            result = _check_float(h, verdict, gen)
        else:
            result = _int_pairs(h, h.x, high, gen, want_collision=verdict.kind == "K")
        if result.ok:
            return result
    if verdict.kind == "S" and verdict.condition and result.evidence.startswith("jacobian rank"):
        evidence = f"undecided: {result.evidence} under 4 draws; the condition may fail for random operands ({verdict.condition})"
        return CheckResult(False, evidence, decided=False)
    return result
