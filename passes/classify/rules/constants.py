"""Rules for calls with no tensor input (constants, random draws), metadata reads and tuple projections."""

from __future__ import annotations

from .base import GETITEM, NO_TENSOR, RULES, Call, K, S, U, Verdict, always, rule

CONSTANTS = (
    "aten.arange.default",
    "aten.arange.start",
    "aten.arange.start_step",
    "aten.full.default",
    "aten.zeros.default",
    "aten.ones.default",
    "aten.scalar_tensor.default",
    "aten.empty.memory_format",
    "aten.empty_strided.default",
    "aten.rand.default",
    "aten.randn.default",
    "aten.randperm.default",
)
RULES.update(dict.fromkeys(CONSTANTS, always(S("constant: no tensor input"))))
NO_TENSOR.update(CONSTANTS)
RULES["aten._assert_tensor_metadata.default"] = always(K("metadata assertion returns nothing: every value erased"))
for _t in (
    "aten.sym_size.int",
    "aten.sym_stride.int",
    "aten.sym_numel.default",
    "aten.sym_storage_offset.default",
    "aten.sym_is_contiguous.default",
):
    RULES[_t] = lambda c: K(f"{c.op} keeps only metadata: every value erased")
RULES["aten.resize_.default"] = always(
    U("resize_ mutates a tensor in place and leaves new elements uninitialised: no value semantics to judge")
)
RULES["aten._local_scalar_dense.default"] = lambda c: (
    S("the value of a one-element tensor as a Python number") if c.x.numel == 1 else K("not a one-element tensor")
)


@rule(GETITEM)
def _getitem(c: Call) -> Verdict:
    """Projection out of a multi-output node; judged per item (varying_item) or for the whole tuple."""
    n = len(c["self"])
    i = c["index"] % n
    if c.item is None:
        if n == 1:
            return S("selects the only output")
        return K(f"selects output {i} of {n}: the others are dropped here (another getitem may keep them)")
    if c.item % n == i:
        return S(f"selects output {i}: identity on it")
    return K(f"output {c.item} is not selected (getitem picks {i})")
