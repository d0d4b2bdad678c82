"""The reversible Function on toy coupling blocks: gradients against plain autograd, what it stores, RNG and autocast."""

from __future__ import annotations

import pytest
import torch
from training.toy_stack import WIDTH, ToyHalf, assert_close, inputs, run, toy_stack

from bwsk.training.reversible.coupling import Half, Step
from bwsk.training.reversible.drift import DriftMonitor, Segment
from bwsk.training.reversible.errors import ConversionError
from bwsk.training.reversible.seams import TorchSeam, seam_for


@pytest.mark.parametrize("anchors", [None, 2, [1, 3]])
def test_gradients_equal_plain_autograd_with_dropout(anchors):
    root, stack = toy_stack(anchors=anchors)
    out, got = run(root, stack, plain=False)
    plain_out, want = run(root, stack, plain=True)
    torch.testing.assert_close(out, plain_out, rtol=0, atol=0)
    assert_close(got, want, 1e-5)
    assert stack.anchors == {None: [], 2: [2], (1, 3): [1, 3]}[tuple(anchors) if isinstance(anchors, list) else anchors]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("autocast", [False, True])
def test_dropout_and_autocast_replay_on_cuda(autocast):
    root, stack = toy_stack()
    root.cuda()
    out, got = run(root, stack, plain=False, autocast=autocast, device="cuda")
    plain_out, want = run(root, stack, plain=True, autocast=autocast, device="cuda")
    torch.testing.assert_close(out, plain_out, rtol=0, atol=0)
    assert_close(got, want, 1e-3 if autocast else 1e-5)


def test_checkpoint_segments_equal_plain_autograd():
    root, stack = toy_stack()
    stack.segments = [Segment(0, 1), Segment(1, 3, "checkpoint"), Segment(3, 4)]
    _, got = run(root, stack, plain=False)
    _, want = run(root, stack, plain=True)
    assert_close(got, want, 1e-5)


def test_parameters_get_gradients_when_the_input_does_not_require_grad():
    root, stack = toy_stack()
    _, got = run(root, stack, plain=False, requires_grad=False)
    _, want = run(root, stack, plain=True, requires_grad=False)
    assert_close(got, want, 1e-5)


def test_bf16_autocast_is_captured_for_the_rebuild():
    root, stack = toy_stack()
    out, got = run(root, stack, plain=False, autocast=True)
    plain_out, want = run(root, stack, plain=True, autocast=True)
    torch.testing.assert_close(out, plain_out, rtol=0, atol=0)
    assert_close(got, want, 1e-3)


def saved_bytes(blocks: int, plain: bool) -> int:
    """Bytes autograd saves for backward during one forward of a `blocks`-deep toy stack."""
    root, stack = toy_stack(blocks)
    stack.plain = plain
    x, scale, _ = inputs()
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        stack(x, {"scale": scale})
    return total


def test_saved_tensors_do_not_grow_with_depth():
    assert saved_bytes(8, plain=False) == saved_bytes(2, plain=False)
    assert saved_bytes(8, plain=True) > 3 * saved_bytes(2, plain=True)


def test_the_stack_draws_one_value_from_the_global_generator():
    root, stack = toy_stack()
    x, scale, _ = inputs()
    for plain in (False, True):
        stack.plain = plain
        torch.manual_seed(5)
        stack(x, {"scale": scale}).sum().backward()
        after = torch.rand(3)
        torch.manual_seed(5)
        torch.randint(2**62, (), dtype=torch.int64)
        assert torch.equal(after, torch.rand(3))


def test_no_grad_runs_the_plain_loop():
    root, stack = toy_stack(dropout=0.0)
    x, scale, _ = inputs()
    with torch.no_grad():
        inferred = stack(x, {"scale": scale})
    torch.testing.assert_close(inferred, stack(x, {"scale": scale}).detach(), rtol=0, atol=0)


def test_a_half_with_batch_norm_is_refused():
    root = torch.nn.ModuleDict({"f": torch.nn.Sequential(ToyHalf(WIDTH, 0.0, 1.0, True), torch.nn.BatchNorm1d(5))})
    with pytest.raises(ConversionError, match=r"f\.1 \(BatchNorm1d\) updates running statistics"):
        Half(root, [Step("f")])


def test_seam_kernels_choice():
    assert seam_for("auto").name == "torch"
    assert seam_for("auto", "cuda").name == "triton"
    assert seam_for("triton").name == "triton"
    with pytest.raises(ConversionError, match="one of"):
        seam_for("cuda")


@pytest.mark.parametrize(
    "seam, autocast",
    [("torch", False), ("torch", True), pytest.param("triton", False, marks=[pytest.mark.interpreter, pytest.mark.sweep])],
    ids=["torch-fp32", "torch-bf16", "triton-fp32"],  # the interpreter computes bf16 wrongly
)
@pytest.mark.slow
def test_float64_streams_make_the_rebuild_exact(seam, autocast):
    """Every block's inputs rebuilt bit for bit; the gradients are plain autograd's (fused norms included)."""
    monitor = DriftMonitor(every=1, blocks="all", rows=None)
    root, stack = toy_stack(6, gain=2.0, seam=seam_for(seam), fuse_norm=seam == "triton", monitor=monitor)
    assert stack.streams == torch.float64
    out, got = run(root, stack, plain=False, autocast=autocast)
    plain_out, want = run(root, stack, plain=True, autocast=autocast)
    assert monitor.last.max_error == 0.0 and sorted(monitor.last.errors) == list(range(6))
    torch.testing.assert_close(out, plain_out, rtol=0, atol=0)
    assert_close(got, want, 1e-12)


def test_the_streams_are_float64_in_every_regime():
    seam, streams, halves = TorchSeam(), [], []
    add = seam.add
    seam.add = lambda stream, branch, norm=None: (streams.append(stream.dtype), halves.append(branch.dtype), add(stream, branch, norm))[-1]
    root, stack = toy_stack(2, dropout=0.0, seam=seam)
    x, scale, _ = inputs()
    for plain in (False, True):
        stack.plain = plain
        assert stack(x, {"scale": scale}).dtype == x.dtype
    with torch.no_grad():
        stack(x, {"scale": scale})
    assert len(streams) == 3 * 2 * 2 and set(streams) == {torch.float64} and set(halves) == {torch.float32}
    assert stack.pair_bytes == 2 * x.numel() * 8
