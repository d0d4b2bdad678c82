"""Check the conditions of conditional S verdicts on the model's actual weights.

A verdict such as "square linear map 64x64, if the weight is invertible" holds
for some weights and not others. With weights at hand, the program is run once
on the CPU (random inputs shaped like its declared ones) and every conditional
call's actual operands are captured; the condition is then checked on the
operand that stays fixed: the rank of a linear map's matrix, the zeros of a
multiplier, the distinctness of an embedding's rows. Conditions of other forms
are left unchecked (None), never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from bwsk.ir.evaluator import Observer, evaluate
from bwsk.ir.program import Program
from bwsk.ir.terms import Prim
from bwsk.ir.types import TensorType, example_tensor
from bwsk.passes.dataflow import Dataflow, meta_tensor

MATMULS = {"aten.mm.default": (0, 1), "aten.bmm.default": (0, 1), "aten.matmul.default": (0, 1), "aten.addmm.default": (1, 2)}


@dataclass(frozen=True)
class ConditionCheck:
    holds: bool
    evidence: str


class _Capture(Observer):
    """Records the actual arguments of the calls whose index is in `wanted` (calls run in trace order)."""

    def __init__(self, wanted: set[int]):
        self.wanted = wanted
        self.index = 0
        self.args: dict[int, list] = {}

    def call(self, prim: Prim, args: list, kwargs: dict, result: Any, scope: list[str]) -> None:
        if self.index in self.wanted:
            self.args[self.index] = list(args)
        self.index += 1


def _rank_check(matrix: torch.Tensor, needed: int) -> ConditionCheck:
    """Numerical rank at the precision the weight is stored in (singular values below eps * size * max are zero)."""
    tolerance = torch.finfo(matrix.dtype).eps * max(matrix.shape[-2:])
    ranks = torch.linalg.matrix_rank(matrix.double(), rtol=tolerance).reshape(-1)
    low = int(ranks.min())
    return ConditionCheck(low >= needed, f"rank {low} of {needed}" + (" (every batch)" if ranks.numel() > 1 else ""))


def _check(target: str, args: list, varying: int) -> ConditionCheck | None:
    if target in MATMULS:
        left, right = MATMULS[target]
        if varying == left:  # x @ W: injective in x iff W has full row rank
            return _rank_check(args[right], args[right].shape[-2])
        if varying == right:  # W @ x: injective in x iff W has full column rank
            return _rank_check(args[left].transpose(-1, -2), args[left].shape[-1])
    if target == "aten.linear.default" and varying == 0:  # x @ W.T
        return _rank_check(args[1].transpose(-1, -2), args[1].shape[-1])
    if target == "aten.mul.Tensor" and isinstance(args[1 - varying], torch.Tensor):
        zeros = int((args[1 - varying] == 0).sum())
        return ConditionCheck(zeros == 0, f"{zeros} zero(s) in the multiplier")
    if target == "aten.embedding.default" and varying == 1:
        rows = args[0].shape[0]
        distinct = torch.unique(args[0], dim=0).shape[0]
        return ConditionCheck(distinct == rows, f"{distinct} distinct rows of {rows}")
    return None


def check_conditions(
    program: Program, flow: Dataflow, varying: Mapping[int, int], weights: Mapping[str, torch.Tensor], sizes: Mapping[str, int]
) -> dict[int, ConditionCheck]:
    """For each call index in `varying` (mapped to the argument position judged), the condition check, if one applies."""
    flow.require_cpu_budget(weights, "checking conditions on the weights")
    capture = _Capture(set(varying))
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for item in program.inputs:
        if not isinstance(item.type, TensorType):
            raise ValueError(f"input %{item.name} is not a tensor; cannot run the program to check conditions")
        shape = tuple(meta_tensor(item.type, sizes).shape)
        inputs.append(example_tensor(shape, item.type.dtype, generator))
    with torch.no_grad():
        evaluate(program, inputs, weights, observer=capture, device=torch.device("cpu"))
    found = {}
    for index, position in varying.items():
        args = capture.args.get(index)
        if args is None:
            continue
        result = _check(flow.calls[index].target, args, position)
        if result is not None:
            found[index] = result
    return found
