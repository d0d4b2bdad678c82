"""Reversible stacks whose seams compute the halves' leading norms: same function, gradients against plain autograd."""

from __future__ import annotations

import pytest
import torch
from training.toy_stack import assert_close, run, toy_stack

from bwsk.training.reversible.drift import Segment
from bwsk.training.reversible.seams import TorchSeam, TritonSeam

SEAMS = {"torch": TorchSeam, "triton": TritonSeam}  # triton: the interpreter on CPU (tests/conftest.py)
SEAM_NAMES = ["torch", pytest.param("triton", marks=pytest.mark.interpreter)]


def unfused_names(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradients of a fused toy stack under the unfused stack's names (`f0_norm.weight` -> `f0.norm.weight`)."""
    return {name.replace("_norm.", ".norm."): grad for name, grad in grads.items()}


@pytest.mark.slow
@pytest.mark.parametrize("seam", SEAM_NAMES)
@pytest.mark.parametrize(
    "anchors", [None, pytest.param(2, marks=pytest.mark.sweep)]
)  # anchors: tests/training/reversible/test_reversible_stack.py
def test_fused_gradients_equal_plain_autograd_with_dropout(seam, anchors):
    root, stack = toy_stack(3, seam=SEAMS[seam](), fuse_norm=True, anchors=anchors)
    assert all(half.lead is not None for block in stack.blocks for half in (block.f, block.g))
    out, got = run(root, stack, plain=False)
    plain_out, want = run(root, stack, plain=True)
    torch.testing.assert_close(out, plain_out, rtol=1e-6, atol=1e-6)
    assert_close(got, want, 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("seam", SEAM_NAMES)
def test_fusing_the_norms_keeps_the_function(seam):
    """Output and every gradient equal the stack whose halves run their own LayerNorm modules."""
    root, stack = toy_stack(3, seam=SEAMS[seam](), fuse_norm=True)
    reference_root, reference = toy_stack(3)
    out, got = run(root, stack, plain=False)
    want_out, want = run(reference_root, reference, plain=False)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    assert_close(unfused_names(got), want, 1e-5)


def test_parameters_get_gradients_when_the_input_does_not_require_grad():
    root, stack = toy_stack(3, fuse_norm=True)
    _, got = run(root, stack, plain=False, requires_grad=False)
    _, want = run(root, stack, plain=True, requires_grad=False)
    assert {n for n, p in root.named_parameters()} == set(got)
    assert_close(got, want, 1e-5)
    assert all(float(g.abs().sum()) > 0 for name, g in got.items() if "_norm." in name), "the norms' weights and biases learn"


def test_checkpoint_segments_and_the_no_grad_loop_with_fused_norms():
    root, stack = toy_stack(4, dropout=0.0, fuse_norm=True)
    stack.segments = [Segment(0, 1), Segment(1, 3, "checkpoint"), Segment(3, 4)]
    out, got = run(root, stack, plain=False)
    _, want = run(root, stack, plain=True)
    assert_close(got, want, 1e-5)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        inference = stack(x, {"scale": None})
    torch.testing.assert_close(inference, stack(x, {"scale": None}).detach(), rtol=0, atol=0)


def test_an_unfused_half_runs_its_norm_module_again():
    root, stack = toy_stack(2, fuse_norm=True)
    fused_out, fused = run(root, stack, plain=False)
    for block in stack.blocks:
        block.f.fuse(False)
        block.g.fuse(False)
    out, grads = run(root, stack, plain=False)
    torch.testing.assert_close(out, fused_out, rtol=1e-5, atol=1e-6)
    assert_close(grads, fused, 1e-5)
