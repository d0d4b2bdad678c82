"""Seam kernels on float64 streams (the reversible runtime's default): the update is computed in float64, so the rebuild
inverts it bit for bit; n and the gradients match the reference at fp32 precision (norm statistics are fp32).

Interpreter tests (CPU tensors, TRITON_INTERPRET=1): fp32 and fp64 only, the interpreter computes bf16 wrongly.
"""

import pytest
import torch
from seam_checks import operands, outputs_and_gradients, widened

from bwsk.kernels import reference, runtime
from bwsk.kernels.patterns import SeamPattern

PATTERNS = [
    SeamPattern("add", "layernorm", True, True, 1e-5),
    SeamPattern("add", "rmsnorm", True, False, 1e-6),
    SeamPattern("add", "none", False, False, 0.0),
]


def stream_values(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A float64 stream as the runtime makes one: an fp32 input plus fp32 updates added in float64."""
    generator = torch.Generator().manual_seed(seed)
    stream = torch.randn(shape, generator=generator).double()
    for _ in range(6):
        stream = stream + torch.randn(shape, generator=generator)
    return stream


def seam(pattern: SeamPattern, direction: str):
    api = runtime.seam_forward if direction == "forward" else runtime.seam_rebuild
    return lambda x, f, weight, bias: api(x, f, weight, bias, eps=pattern.eps, norm=pattern.norm)


@pytest.mark.slow
@pytest.mark.interpreter
@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_rebuild_inverts_forward_bit_for_bit(pattern):
    x = stream_values((3, 7, 100), seed=1)
    f = torch.randn(3, 7, 100, generator=torch.Generator().manual_seed(2))
    _, _, weight, bias = operands(pattern, (3, 7, 100), torch.float64, torch.float32, seed=3)
    weight, bias = (t.detach() if t is not None else None for t in (weight, bias))
    y, n_forward = seam(pattern, "forward")(x, f, weight, bias)
    rebuilt, n_rebuilt = seam(pattern, "rebuild")(y, f, weight, bias)
    assert y.dtype == rebuilt.dtype == n_forward.dtype == torch.float64
    assert torch.equal(y, x + f) and torch.equal(rebuilt, x)
    _, n_again = seam(pattern, "rebuild")(y, torch.zeros_like(y), weight, bias)
    assert torch.equal(n_again, n_forward)  # the n a segment's first half starts from, forward and rebuild alike
    fp32_rebuilt = runtime.seam_rebuild(y.float(), f, weight, bias, eps=pattern.eps, norm=pattern.norm)[0]
    assert not torch.equal(fp32_rebuilt.double(), x)  # in fp32 the same round trip is not exact


@pytest.mark.interpreter
@pytest.mark.parametrize("direction", ["forward", "rebuild"])
@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_wide_seam_matches_the_reference(pattern, direction):
    """The stream exactly; n and every gradient within fp32's error of the exact (fp64) reference."""
    inputs = operands(pattern, (2, 5, 96), torch.float64, torch.float32, seed=4)
    generator = torch.Generator().manual_seed(5)
    upstream = tuple(torch.randn(2, 5, 96, generator=generator, dtype=torch.float64) for _ in range(2))
    run = reference.seam_forward if direction == "forward" else reference.seam_rebuild
    got = outputs_and_gradients(seam(pattern, direction), inputs, upstream)
    exact = outputs_and_gradients(lambda *args: run(pattern, *args), widened(inputs), upstream)
    assert torch.equal(got[0], exact[0])
    assert [t.dtype for t in got] == [torch.float64, torch.float64] + [t.dtype for t in inputs if t is not None]
    for mine, truth in zip(got[1:], exact[1:]):
        scale = max(1.0, truth.abs().max().item())
        assert (mine.double() - truth).abs().max().item() <= 64 * torch.finfo(torch.float32).eps * scale
