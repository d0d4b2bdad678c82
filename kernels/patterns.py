"""Seam patterns: the arithmetic at one coupling seam, and the set of kernels a model needs.

A seam is where a coupling block updates a stream and the next sub-block starts:
`y = x + f` (f the branch output), then `n = norm(y)` for the consumer of y. The
reversible backward runs the same seam inverted: `x = y - f`, then `n = norm(x)`
for the recompute. A pattern fixes everything that changes the generated code
(normalisation, affine weight and bias, eps); which tensors flow through it is the
runtime's business. Invariant: two seams with equal patterns share one kernel family.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

OPS = ("add",)
NORMS = ("layernorm", "rmsnorm", "none")


@dataclass(frozen=True, order=True)
class SeamPattern:
    """`y = x + f; n = norm(y) * weight + bias` (rebuild: `x = y - f; n = norm(x) * weight + bias`).

    `norm` "none" has no affine part and no eps (n is y itself).
    """

    op: str
    norm: str
    weight: bool
    bias: bool
    eps: float

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"seam op {self.op!r} is not one of {OPS}")
        if self.norm not in NORMS:
            raise ValueError(f"seam norm {self.norm!r} is not one of {NORMS}")
        if self.norm == "none" and (self.weight or self.bias or self.eps):
            raise ValueError("a seam without normalisation has no weight, bias or eps")
        if self.norm != "none" and not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"normalisation eps must be a positive finite number, got {self.eps!r}")

    @property
    def name(self) -> str:
        """A Python identifier naming the kernel family, e.g. `seam_add_layernorm_wb_eps1em05`."""
        if self.norm == "none":
            return f"seam_{self.op}"
        affine = ("w" if self.weight else "") + ("b" if self.bias else "")
        eps = repr(float(self.eps)).replace("-", "m").replace("+", "").replace(".", "p")
        return f"seam_{self.op}_{self.norm}{'_' + affine if affine else ''}_eps{eps}"

    def describe(self) -> str:
        """One line of arithmetic, for headers and docstrings."""
        if self.norm == "none":
            return "y = x + f (rebuild: x = y - f); no normalisation"
        affine = (" * weight" if self.weight else "") + (" + bias" if self.bias else "")
        return f"y = x + f; n = {self.norm}(y){affine}, eps = {self.eps!r} (rebuild: x = y - f; n = {self.norm}(x){affine})"


@dataclass(frozen=True, order=True)
class SeamUse:
    """Where a seam occurs: `block` of `model`, and which stream update of the coupling (`y1` or `y2`)."""

    model: str
    block: str
    seam: str

    def __str__(self) -> str:
        return f"{self.model} {self.block} ({self.seam})"


@dataclass(frozen=True)
class KernelPlan:
    """One kernel family to emit: a pattern and every seam it serves, sorted."""

    pattern: SeamPattern
    users: tuple[SeamUse, ...]


def plan_kernels(uses: Iterable[tuple[SeamPattern, SeamUse]]) -> list[KernelPlan]:
    """The deduplicated kernel families for `uses`, ordered by kernel name; each lists its users once, sorted."""
    by_pattern: dict[SeamPattern, set[SeamUse]] = {}
    for pattern, use in uses:
        by_pattern.setdefault(pattern, set()).add(use)
    plans = [KernelPlan(pattern, tuple(sorted(users))) for pattern, users in by_pattern.items()]
    names = [plan.pattern.name for plan in plans]
    if len(set(names)) != len(names):
        raise ValueError(f"two seam patterns share a kernel name: {sorted(names)}")
    return sorted(plans, key=lambda plan: plan.pattern.name)
