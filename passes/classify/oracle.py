"""Numerical verification of an injectivity verdict on small random operands: the entry point, `check`.

Invariants:
- An S verdict is confirmed by a full-rank Jacobian of the judged outputs in the varying operand
  and no collision found by the searches (float operands), or, for integer/bool operands,
  by every single-element change altering the output.
- A K verdict is confirmed only by a witness: two different inputs whose outputs are equal (within a
  tolerance scaled to their distance), found along a Jacobian null direction, by perturbing one
  element, by a collision of the scalar map (elementwise ops), or by changing one or two integer elements.
- Operands are drawn inside the verdict's domain (oracle_operands); the Jacobian is taken in at most
  MAX_JACOBIAN_COLUMNS elements, so larger operands are confirmed on a sample (oracle_jacobian).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from bwsk.errors import first_line
from bwsk.passes.classify.oracle_collisions import perturbation_witness, scalar_collision, two_element_collision
from bwsk.passes.classify.oracle_harness import Harness, float_outputs, outputs_equal
from bwsk.passes.classify.oracle_jacobian import MAX_JACOBIAN_COLUMNS, jacobian, jacobian_rank, null_direction_witness
from bwsk.passes.classify.oracle_operands import call_tensor_infos, index_bounds
from bwsk.passes.classify.rules import Verdict, bind_arguments, operand_name


@dataclass(frozen=True)
class CheckResult:
    """Whether the numbers agree with the verdict, and the evidence either way.

    `decided` is False when the numerics themselves failed (an SVD that did not converge): neither
    confirmed nor refuted.
    """

    ok: bool
    evidence: str
    decided: bool = True


def _int_candidates(x: torch.Tensor, high: int | None) -> list[int | bool]:
    """Values to set one element to: the valid ids below `high`, else small values and the float-rounding pairs 2^p, 2^p + 1."""
    if x.dtype == torch.bool:
        return [False, True]
    if high is not None:
        return list(range(min(high, 12)))
    info = torch.iinfo(x.dtype)
    small = list(range(0 if info.min == 0 else -3, 4))
    big = [v for p in (8, 11, 24, 53) for v in (2**p, 2**p + 1) if v <= info.max // 4]
    return small + big


def _check_int(h: Harness, high: int | None, gen: torch.Generator, want_collision: bool) -> CheckResult:
    """An integer or bool operand: set one element to a then b; S needs every pair to differ, K one equal pair (or two elements).

    Every position (up to 4096, in random order) is tried with the first pair, six random positions with all pairs.
    """
    x = h.x
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
        if outputs_equal(h(xa.view(x.shape)), h(xb.view(x.shape)), atol=0):
            return CheckResult(want_collision, f"witness: element {pos} set to {a} or {b}, outputs identical")
    if want_collision:
        witness = two_element_collision(h, x, gen)
        if witness:
            return CheckResult(True, witness)
        return CheckResult(False, f"no collision among {checked} single-element changes or swaps")
    return CheckResult(True, f"all {checked} single-element changes alter the output")


def _check_float(h: Harness, verdict: Verdict, gen: torch.Generator) -> CheckResult:
    """A float operand: S by full Jacobian rank and no collision found, K by a witness."""
    x = h.x
    n = x.numel()
    columns = torch.arange(min(n, MAX_JACOBIAN_COLUMNS))  # leading elements: whole rows, so row-wise null directions fit
    m = columns.numel()
    where = "" if m == n else f" on {m} of {n} elements"
    jac, rtol = jacobian(h, x, columns)
    rank, null = jacobian_rank(jac, rtol)
    if verdict.kind == "S":
        if not all(torch.isfinite(v).all() for v in float_outputs(h(x))):
            return CheckResult(False, "outputs are not finite on the sampled operands")
        if rank < m:
            rank, _ = jacobian_rank(*jacobian(h, x, columns, numeric=True))
        if rank < m:
            return CheckResult(False, f"jacobian rank {rank}/{m} < {m}{where}")
        witness = perturbation_witness(h, x, gen, (1e-6, 1e-3, 0.3, 3.0)) or scalar_collision(h, x, rtol, crossings=False)
        if witness:
            return CheckResult(False, f"jacobian rank {m}/{m}{where} but {witness}")
        return CheckResult(True, f"jacobian rank {m}/{m}{where}; no collision found")
    steps = (1e-12, 1e-9, 1e-6, 1e-3, 0.3, 3.0, 30.0)
    witness = (
        (rank < m and null_direction_witness(h, x, columns, jac, null, rtol))
        or perturbation_witness(h, x, gen, steps)
        or scalar_collision(h, x, rtol)
    )
    if not witness and rank == m < n:  # a global rank deficit (a down-projection) needs every column to show
        columns, m, where = torch.arange(n), n, ""
        jac, rtol = jacobian(h, x, columns)
        rank, null = jacobian_rank(jac, rtol)
        witness = rank < m and null_direction_witness(h, x, columns, jac, null, rtol)
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
    if not call_tensor_infos(args, kwargs):
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
    """The verdict checked on one operand draw (unconditional S) or up to four (K, conditional S): the first that confirms it."""
    key = (operand_name(target, varying), varying_item)
    high = index_bounds(target, bind_arguments(target, args, kwargs)).get(key, (None, None))[0]
    result = CheckResult(False, "not run")
    # K: a witness under any of a few operand draws; conditional S: full rank under any draw (the condition may fail for one)
    for attempt in range(1 if verdict.kind == "S" and not verdict.condition else 4):
        h = Harness(target, args, kwargs, varying, varying_item, outputs, seed + attempt, verdict.domain)
        if not isinstance(h.x, torch.Tensor):
            return CheckResult(False, "the varying operand is not a tensor (name a list item with varying_item)")
        if h.x.numel() == 0:
            return CheckResult(verdict.kind == "S", "empty operand: trivially injective")
        gen = torch.Generator().manual_seed(seed + attempt + 1)
        if h.x.is_floating_point():
            result = _check_float(h, verdict, gen)
        else:
            result = _check_int(h, high, gen, want_collision=verdict.kind == "K")
        if result.ok:
            return result
    if verdict.kind == "S" and verdict.condition and result.evidence.startswith("jacobian rank"):
        evidence = f"undecided: {result.evidence} under 4 draws; the condition may fail for random operands ({verdict.condition})"
        return CheckResult(False, evidence, decided=False)
    return result
