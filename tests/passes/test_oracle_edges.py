"""Oracle edge cases found on outside architectures: wide Jacobians, ill-conditioned conditional S verdicts."""

from __future__ import annotations

import pytest
import torch

from bwsk.passes.classify.oracle import check
from bwsk.passes.classify.oracle_jacobian import jacobian_rank
from bwsk.passes.classify.rules import TensorInfo, classify


def test_rank_of_a_wide_jacobian_returns_true_null_directions():
    generator = torch.Generator().manual_seed(3)
    jac = torch.randn(20, 50, generator=generator, dtype=torch.float64) @ torch.randn(50, 60, generator=generator, dtype=torch.float64)
    jac = torch.cat([jac, torch.zeros(7, 60, dtype=torch.float64)])  # rows no column reaches
    rank, null = jacobian_rank(jac, 1e-9)
    assert rank == 20
    assert null.shape[0] > 0
    assert torch.allclose(jac @ null.T, torch.zeros(27, null.shape[0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(null @ null.T, torch.eye(null.shape[0], dtype=torch.float64), atol=1e-12)


def test_rank_of_a_square_full_rank_jacobian_has_no_null_space():
    jac = torch.randn(12, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rank, null = jacobian_rank(jac, 1e-9)
    assert rank == 12 and null.shape[0] == 0


@pytest.mark.slow
def test_depthwise_convolution_is_never_refuted_by_an_ill_conditioned_draw():
    """MobileViT's 3x3 depthwise convolution: S if the map has full rank; random kernels can be numerically singular."""
    args = (
        TensorInfo((1, 16, 16, 16), torch.float32),
        TensorInfo((16, 1, 3, 3), torch.float32),
        None,
        [1, 1],
        [1, 1],
        [1, 1],
        False,
        [0, 0],
        16,
    )
    verdict = classify("aten.convolution.default", args, {}, 0)
    assert verdict.kind == "S" and verdict.condition
    result = check("aten.convolution.default", args, {}, 0, verdict)
    assert result.ok or not result.decided, result.evidence
