"""Injectivity rules: is an ATen primitive information-preserving (S) or -erasing (K) in one operand?

The verdict's invariants are stated in `base`; one module per family of operators registers its
rules. `classify` is the entry point: it binds arguments by schema name, handles what every rule
shares (empty operands, outputs emptied by broadcasting) and never raises.
"""

from __future__ import annotations

from typing import Any

from bwsk.ir.ops import signature

from . import constants, elementwise, indexing, linear, movement, reductions  # noqa: F401 - they register rules
from .base import (
    GETITEM,
    LIST_OPERAND,
    NO_TENSOR,
    PRIMARY,
    RULES,
    Call,
    K,
    S,
    TensorInfo,
    U,
    Verdict,
    fmt,
    meta,
    resolve_op,
)

__all__ = [
    "GETITEM",
    "TensorInfo",
    "Verdict",
    "bind_arguments",
    "classify",
    "covered_targets",
    "operand_name",
    "primary_outputs",
    "resolve_op",
]


def covered_targets() -> frozenset[str]:
    """Every target with a rule (a rule may still answer "unknown" for operands it does not model)."""
    return frozenset(RULES)


def primary_outputs(target: str) -> tuple[int, ...] | None:
    """Outputs judged when the caller names none; None means all of them."""
    return PRIMARY.get(target)


def bind_arguments(target: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Arguments by schema name, defaults filled in."""
    if target == GETITEM:
        return dict(zip(("self", "index"), args, strict=False))
    return signature(target).bind(args, kwargs)


def operand_name(target: str, position: int) -> str | None:
    """The schema name of positional argument `position` (None when out of range)."""
    names = ["self", "index"] if target == GETITEM else list(signature(target).positional)
    return names[position] if 0 <= position < len(names) else None


def _emptied(call: Call) -> Verdict | None:
    """K when a non-empty operand reaches only empty outputs (broadcast into a size-0 shape)."""
    if call.target == GETITEM:
        return None
    try:
        outs = meta(call)
    except (RuntimeError, NotImplementedError):  # outputs that are not tensors (item, sizes) or data-dependent shapes
        return None
    chosen = [outs[i] for i in (call.outputs or range(len(outs))) if i < len(outs)]
    if chosen and all(o.numel == 0 for o in chosen):
        return K(f"every judged output is empty ({', '.join(fmt(o.shape) for o in chosen)}): all elements erased")
    return None


def classify(
    target: str,
    args: tuple,
    kwargs: dict,
    varying: int,
    *,
    varying_item: int | None = None,
    outputs: tuple[int, ...] | None = None,
) -> Verdict:
    """Judge `target` in operand `args[varying]` (item `varying_item` of it when it is a list).

    `varying` may also name a keyword operand: positions past `args` count into `kwargs` in order.
    `outputs` restricts a multi-output op to those results (default: `primary_outputs(target)`).
    Never raises: anything a rule cannot read yields "unknown".
    """
    rule = RULES.get(target)
    if rule is None:
        return U(f"no rule for {target}")
    try:
        name = operand_name(target, varying) if varying < len(args) else list(kwargs)[varying - len(args)]
        call = Call(target, bind_arguments(target, args, kwargs), name, varying_item, outputs or primary_outputs(target))
        x = None if target in NO_TENSOR else call.x
        listed = target in LIST_OPERAND and isinstance(call.bound.get(call.name), (list, tuple))
        if target not in NO_TENSOR and not isinstance(x, TensorInfo) and not listed:
            return U(f"operand {varying} ({call.name}) of {target} is not a tensor (name a list item with varying_item)")
        if isinstance(x, TensorInfo) and x.numel == 0:
            verdict = S(f"empty operand ({fmt(x.shape)}): nothing to erase")
        else:
            verdict = (isinstance(x, TensorInfo) and _emptied(call)) or rule(call)
    except Exception as exc:  # noqa: BLE001 - operands a rule cannot read are "unknown", never a guess
        verdict = U(f"rule for {target} cannot judge these operands ({type(exc).__name__}: {exc})")
    return Verdict(verdict.kind, " ".join(verdict.reason.split()), verdict.condition, verdict.erased, verdict.domain)
