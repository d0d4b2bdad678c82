"""FLOPs as bwsk counts them: `FlopCounterMode`'s formulas (matrix products and attention; elementwise operators,
norms and softmax count none) plus the products its table lacks.

    counter = counting_flops()          # a FlopCounterMode that also knows the operators in EXTRA_FLOPS
    operator_flops(func, args, kwargs, out)   # one dispatched operator's FLOPs, by the same formulas

The additions: the CPU flash attention kernels (counted as their CUDA twins are: not causal) and the in-place
`addmm_` (the chunked loss accumulates its weight gradient with it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _addmm_flops(self_shape, a_shape, b_shape, *args, **kwargs) -> int:
    (m, k), (_, n) = a_shape, b_shape
    return 2 * m * k * n


EXTRA_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
    aten.addmm_: _addmm_flops,
}

_FORMULAS = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOPS).flop_registry  # by operator packet


def counting_flops() -> FlopCounterMode:
    """A fresh `FlopCounterMode` (no display) counting `EXTRA_FLOPS` too."""
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FLOPS)


def operator_flops(func: torch._ops.OpOverload, args: tuple, kwargs: dict[str, Any], out: Any) -> int:
    """The FLOPs `counting_flops()` would count for one call of `func` that returned `out` (0 for an operator it has no
    formula for)."""
    formula = _FORMULAS.get(func._overloadpacket)
    return 0 if formula is None else int(formula(*args, **kwargs, out_val=out))
