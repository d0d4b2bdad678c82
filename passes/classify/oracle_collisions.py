"""Collision searches: two different values of the judged operand with equal outputs, a witness against injectivity.

Invariants:
- A search returns evidence only for two distinct inputs whose judged outputs are equal: identical
  for perturbations and two-element changes, within the dtype's relative tolerance for scalar-map
  collisions; None when it finds none (which proves nothing).
- Perturbations that make an output leave the op's domain (nan, inf) are not collisions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from bwsk.passes.classify.oracle_harness import Harness, float_outputs, outputs_equal


def perturbation_witness(h: Harness, x: torch.Tensor, gen: torch.Generator, steps: tuple[float, ...]) -> str | None:
    """A witness by moving one element by relative steps: two of the moved inputs (or one and x) give identical outputs."""
    flat = x.reshape(-1)
    base = h(x)
    finite = sum(int(torch.isfinite(v).sum()) for v in float_outputs(base))
    for pos in torch.randperm(x.numel(), generator=gen)[:16].tolist():
        seen: list[tuple[torch.Tensor, list[Any]]] = [(flat, base)]
        for rel, sign in itertools.product(steps, (1, -1)):
            moved = flat.clone()
            moved[pos] += sign * rel * max(1.0, abs(float(flat[pos])))
            out = h(moved.view(x.shape))
            if sum(int(torch.isfinite(v).sum()) for v in float_outputs(out)) < finite:
                continue  # left the op's domain: nan or inf is no collision
            for earlier, earlier_out in seen:
                if not torch.equal(moved, earlier) and outputs_equal(earlier_out, out, atol=0):
                    return f"witness: element {pos} set to {float(earlier[pos]):.3g} or {float(moved[pos]):.3g}, outputs identical"
            seen.append((moved, out))
    return None


def bisect(g: Callable[[float], float], lo: float, hi: float, level: float, halvings: int = 200) -> float:
    """A point of [lo, hi] where g crosses `level`, for g on either side of it at lo and hi."""
    below = g(lo) < level
    for _ in range(halvings):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (g(mid) < level) == below else (lo, mid)
    return (lo + hi) / 2


def _scalar_map(h: Harness, dtype: torch.dtype) -> Callable[[float], float]:
    """The elementwise op as a map of one scalar."""
    return lambda s: float(h.raw(torch.tensor([s], dtype=dtype))[0])


def _equal_at_first_element(h: Harness, x: torch.Tensor, a: float | torch.Tensor, b: float | torch.Tensor, atol: float) -> bool:
    """Outputs equal within atol with element 0 of x set to a, and to b."""
    x1, x2 = x.clone().reshape(-1), x.clone().reshape(-1)
    x1[0], x2[0] = a, b
    return outputs_equal(h(x1.view(x.shape)), h(x2.view(x.shape)), atol=atol)


def scalar_collision(h: Harness, x: torch.Tensor, rtol: float, crossings: bool = True) -> str | None:
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
    g = _scalar_map(h, x.dtype)
    lo, mid, hi = float(grid[left]), float(grid[i]), float(grid[right])
    near = min(g(lo), g(hi), key=lambda v: abs(v - g(mid)))
    level = g(mid) + 0.5 * (near - g(mid))
    a, b = bisect(g, lo, mid, level), bisect(g, mid, hi, level)
    if _equal_at_first_element(h, x, a, b, atol=rtol * abs(a - b)):
        return f"witness: element 0 set to {a:.4f} or {b:.4f}, outputs equal within {rtol * abs(a - b):.0e}"
    return _level_crossing(h, x, grid, values.to(torch.float64), rtol) if crossings else None


def _level_crossing(h: Harness, x: torch.Tensor, grid: torch.Tensor, values: torch.Tensor, rtol: float) -> str | None:
    """For a monotone-by-pieces scalar map (tan, fmod): the level of one grid point crossed again far away."""
    step = float(grid[1] - grid[0])
    jumps = torch.diff(values).abs()
    smooth = jumps < 20 * float(jumps.median()) + 1e-12
    g = _scalar_map(h, x.dtype)
    for i in range(0, len(grid), 97):
        level = values[i]
        crossing = (values[:-1] - level) * (values[1:] - level) <= 0
        far = (torch.arange(len(grid) - 1) - i).abs() * step > 0.5
        found = torch.nonzero(crossing & far & smooth).reshape(-1)
        if found.numel() == 0:
            continue
        j = int(found[0])
        b = bisect(g, float(grid[j]), float(grid[j + 1]), float(level))
        if _equal_at_first_element(h, x, grid[i], b, atol=rtol * max(1.0, abs(float(level)))):
            return f"witness: element 0 set to {float(grid[i]):.4f} or {b:.4f}, outputs equal"
    return None


def two_element_collision(h: Harness, x: torch.Tensor, gen: torch.Generator) -> str | None:
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
            if not torch.equal(moved, flat) and outputs_equal(base, h(moved.view(x.shape)), atol=0):
                return f"witness: elements {i} and {j} changed together, outputs identical"
    return None
