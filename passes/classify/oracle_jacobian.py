"""The Jacobian test of injectivity: rank in the judged operand, and witnesses along its null directions.

Invariants:
- The Jacobian is taken in at most MAX_JACOBIAN_COLUMNS elements of the varying operand (the leading
  ones in memory order, so whole rows; the caller names them in its evidence): a null direction there
  is a witness for K; full rank there is necessary, not sufficient, for S.
- Rank is counted against the tolerance of the least precise float dtype involved (looser for
  central differences).
- A null-direction witness is two distinct inputs whose judged outputs are equal within rtol times their distance.
"""

from __future__ import annotations

import itertools

import torch

from bwsk.passes.classify.oracle_harness import Harness, float_outputs, float_vector, outputs_equal

MAX_JACOBIAN_COLUMNS = 256  # larger operands are checked on their leading elements (K falls back to all of them)
NULL_DIRECTIONS = 4  # how many null directions `null_direction_witness` tries
_RTOL = {torch.float64: 1e-9, torch.float32: 1e-5}


def _rtol(*dtypes: torch.dtype) -> float:
    """Relative tolerance of the least precise float dtype involved."""
    return max(_RTOL.get(d, 1e-2) for d in dtypes if d.is_floating_point)


def jacobian(h: Harness, x: torch.Tensor, columns: torch.Tensor, numeric: bool = False) -> tuple[torch.Tensor, float]:
    """Jacobian of the judged float outputs in the elements `columns` of x (outputs x columns), and its rank tolerance.

    Vectorised autograd unless `numeric` or the op is not differentiable in x; else central
    differences, which also see outputs autograd treats as constant (layer norm's mean and rstd, detach).
    """
    outs = float_outputs(h(x))
    flat = x.reshape(-1)

    def f(z: torch.Tensor) -> torch.Tensor:
        return float_vector(h(flat.index_put((columns,), z).view(x.shape)))

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


def jacobian_rank(jac: torch.Tensor, rtol: float) -> tuple[int, torch.Tensor]:
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


def null_direction_witness(
    h: Harness, x: torch.Tensor, columns: torch.Tensor, jac: torch.Tensor, null: torch.Tensor, rtol: float
) -> str | None:
    """A witness near a null direction: x and x + t v, pulled back onto x's level set by Gauss-Newton steps
    in the Jacobian's row space (curved level sets: prod, variance), outputs equal within rtol * t."""
    base = h(x)
    if not float_outputs(base):
        return None
    target = float_vector(base)
    pinv = None  # computed when a step first needs pulling back: a linear map's null direction never does
    for v, t in itertools.product(null[:NULL_DIRECTIONS], (1e-1, 1e-2, 1e-3)):
        z = x.reshape(-1).to(torch.float64)[columns] + t * v
        for _ in range(6):
            moved = x.reshape(-1).index_put((columns,), z.to(x.dtype)).view(x.shape)
            if moved.is_floating_point() and outputs_equal(base, h(moved), atol=rtol * t):
                if not torch.equal(moved, x):
                    return f"witness: inputs {t:.0e} apart near a null direction, outputs equal within {rtol * t:.0e}"
                break
            now = float_vector(h(moved))
            if now.shape != target.shape or not torch.isfinite(now).all():
                break
            pinv = torch.linalg.pinv(jac) if pinv is None else pinv
            z = z - pinv @ (now - target)
    return None
