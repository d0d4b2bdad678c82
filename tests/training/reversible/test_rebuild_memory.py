"""What the rebuild keeps alive: output streams released as they are rebuilt, stream arithmetic in place, the stack output.

The values are the subject of the gradient tests (plain autograd, bit for bit); these check the memory behaviour
itself: that in-place arithmetic is the same arithmetic, that a segment's saved outputs die before its first block is
rebuilt, that writing them after forward is refused, and that the stack output hands its input a gradient in the
input's dtype.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn
from training.toy_stack import inputs, toy_stack

from bwsk.training.reversible.seams import TorchSeam, TritonSeam, seam_norm_of
from bwsk.training.reversible.stack import StreamSum

SEAMS = {"torch": TorchSeam, "triton": TritonSeam}  # triton: the interpreter on CPU (tests/conftest.py)
SEAM_NAMES = ["torch", pytest.param("triton", marks=pytest.mark.interpreter)]


def layer_norm(width: int) -> nn.LayerNorm:
    norm = nn.LayerNorm(width)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


@pytest.mark.slow
@pytest.mark.parametrize("seam", SEAM_NAMES)
@pytest.mark.parametrize("streams", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_norm", [False, True])
def test_in_place_stream_arithmetic_is_the_out_of_place_arithmetic(seam, streams, with_norm):
    generator = torch.Generator().manual_seed(7)
    stream = torch.randn(3, 7, 24, generator=generator, dtype=streams)
    branch = torch.randn(3, 7, 24, generator=generator).to(torch.bfloat16)
    norm = seam_norm_of(layer_norm(24)) if with_norm else None
    assert with_norm == (norm is not None)
    arithmetic = SEAMS[seam]()

    want, want_normed = arithmetic.subtract(stream.clone(), branch, norm)
    target = stream.clone()
    got, got_normed = arithmetic.subtract(target, branch, norm, inplace=True)
    assert got.data_ptr() == target.data_ptr() and got.dtype == streams
    assert torch.equal(got, want) and torch.equal(got_normed, want_normed)

    value = torch.randn(3, 7, 24, generator=generator, dtype=streams)
    grad_stream = torch.randn(3, 7, 24, generator=generator, dtype=streams)
    grad_normed = torch.randn(3, 7, 24, generator=generator)
    want_grads = arithmetic.norm_backward(value, grad_stream.clone(), grad_normed, norm)
    target = grad_stream.clone()
    got_grads = arithmetic.norm_backward(value, target, grad_normed, norm, inplace=True)
    assert got_grads[0].data_ptr() == target.data_ptr()
    for got_grad, want_grad in zip(got_grads, want_grads):
        assert (got_grad is None) == (want_grad is None) and (got_grad is None or torch.equal(got_grad, want_grad))


def test_a_wider_operand_is_not_written_into_a_narrower_stream():
    """In place only where the out-of-place result has the stream's dtype: an fp32 stream minus a float64 branch is not."""
    stream, branch = torch.ones(2, 4), torch.full((2, 4), 0.25, dtype=torch.float64)
    got, _ = TorchSeam().subtract(stream, branch, inplace=True)
    assert got.dtype == torch.float64 and got.data_ptr() != stream.data_ptr() and torch.equal(stream, torch.ones(2, 4))


def segment_node(out: torch.Tensor):
    """The ReversibleFunction node of the stack's (single) segment, from the stack output's graph."""
    node = out.grad_fn.next_functions[0][0]
    assert type(node).__name__ == "ReversibleFunctionBackward"
    return node


def test_a_segments_output_streams_are_released_before_its_first_block_is_rebuilt():
    root, stack = toy_stack(3, anchors=[])
    x, scale, weight = inputs()
    out = stack(x, {"scale": scale})
    released = [weakref.ref(stream) for stream in segment_node(out).streams]
    seen = []
    root["f0"].register_forward_pre_hook(lambda module, args: seen.append([ref() is None for ref in released]))
    (out.float() * weight).sum().backward()
    assert seen == [[True, True]]  # block 0's F rebuilt once, both saved outputs already gone


def test_an_output_stream_written_after_forward_is_refused():
    root, stack = toy_stack(2, anchors=[])
    x, scale, weight = inputs()
    out = stack(x, {"scale": scale})
    segment_node(out).streams[0].add_(1.0)  # shares the output's storage and version counter
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (out.float() * weight).sum().backward()


@pytest.mark.parametrize("hidden_dtype", [torch.float32, torch.bfloat16])
def test_the_stack_output_equals_autograds_and_hands_its_input_a_gradient_in_its_dtype(hidden_dtype):
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 5, 8, generator=generator).to(hidden_dtype).requires_grad_()
    y1, y2 = (torch.randn(2, 5, 8, generator=generator, dtype=torch.float64).requires_grad_() for _ in range(2))
    upstream = torch.randn(2, 5, 8, generator=generator).to(hidden_dtype)
    out = StreamSum.apply(y1, y2, hidden)
    got = torch.autograd.grad(out, (y1, y2, hidden), upstream)
    reference = (y1 + y2 - hidden.to(torch.float64)).to(hidden_dtype)
    want = torch.autograd.grad(reference, (y1, y2, hidden), upstream)
    assert torch.equal(out, reference) and out.dtype == hidden_dtype
    assert all(torch.equal(g, w) and g.dtype == w.dtype for g, w in zip(got, want))
