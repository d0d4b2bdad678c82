"""What the memory pass returns: every unit's decision, and bytes per training mode and per layer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

MODES = ("conventional", "checkpoint", "analyzed", "reversible")

DROPPED = "not kept"  # a reversible-mode decision: nothing keeps it from forward to backward


@dataclass
class Decision:
    """One unit of saved memory and what the plan does with it.

    A unit is a storage, named by its owner value, or the extra buffers one call
    saves (`value` None). `decision` is the plan with inversion (the analyzed plan
    when there is no coupling); `analyzed` the decision without it. `rebuilt_by`
    names the S-phase or coupled block whose rebuild in backward materialises the
    unit (None when stored). `saved` is False for a unit autograd does not save
    but the plan stores as an S-phase input.
    """

    storage: int | None  # the storage's id in the replay; None for buffers
    value: int | None  # the owner value; None for buffers
    call: int  # the call making the unit (for a program input: the first call reading it)
    name: str
    type: str
    bytes: int
    decision: str
    analyzed: str
    reason: str
    rebuilt_by: str | None
    layer: str
    saved: bool


@dataclass
class ModeTotal:
    """Bytes kept from forward to backward (`stored`), the largest rebuild in backward (`peak`), their sum."""

    stored: int
    peak: int
    total: int


def mode_total(units: Iterable[tuple[int, str | None]]) -> ModeTotal:
    """Units are (bytes, group): stored bytes (group None) plus the largest group's bytes."""
    stored = 0
    groups: dict[str, int] = defaultdict(int)
    for nbytes, group in units:
        if group is None:
            stored += nbytes
        else:
            groups[group] += nbytes
    peak = max(groups.values(), default=0)
    return ModeTotal(stored, peak, stored + peak)


@dataclass
class LayerTotal:
    """Per `layer_of` group: bytes autograd saves there, and how the plan's units split by decision."""

    layer: str
    saved: int
    store: int
    recompute: int
    invert: int


@dataclass
class MemoryResult:
    """Totals per mode (keys: MODES), every unit's decision in program order, per-layer totals."""

    modes: dict[str, ModeTotal]
    decisions: list[Decision]
    layers: list[LayerTotal]
    inexact: list[str]  # operators whose probe failed (every operand assumed saved)
