"""The Triton seam kernels (interpreter on CPU) against the torch reference: outputs and every gradient."""

import pytest
import torch
from seam_checks import check_against_reference, operands

from bwsk.kernels import reference, runtime
from bwsk.kernels.patterns import SeamPattern

PATTERNS = [
    SeamPattern("add", "layernorm", True, True, 1e-5),
    SeamPattern("add", "layernorm", False, False, 1e-6),
    SeamPattern("add", "rmsnorm", True, False, 1e-6),
    SeamPattern("add", "none", False, False, 0.0),
]
SHAPES = [(3, 7, 100), (1, 1, 1023), (2, 5, 768)]
# (stream dtype, branch dtype): uniform precision, and fp32 streams fed by a half-precision branch.
DTYPES = [(torch.float32, torch.float32), (torch.float16, torch.float16), (torch.float32, torch.float16)]

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def triton_seam(pattern: SeamPattern, direction: str):
    api = runtime.seam_forward if direction == "forward" else runtime.seam_rebuild
    return lambda x, f, weight, bias: api(x, f, weight, bias, eps=pattern.eps, norm=pattern.norm)


@pytest.mark.interpreter
@pytest.mark.parametrize("direction", ["forward", "rebuild"])
@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: f"{str(d[0])[6:]}-{str(d[1])[6:]}")
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_seam_kernel_matches_reference(pattern, shape, dtypes, direction):
    inputs = operands(pattern, shape, *dtypes, seed=hash((pattern.name, shape)) % 1000)
    check_against_reference(pattern, direction, triton_seam(pattern, direction), inputs)


@pytest.mark.slow
@pytest.mark.interpreter
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_a_large_eps_is_honoured(norm):
    """With the default inputs eps = 1e-6 is below the tolerance; eps = 0.5 is not."""
    pattern = SeamPattern("add", norm, True, norm == "layernorm", 0.5)
    for direction in ("forward", "rebuild"):
        inputs = operands(pattern, (3, 7, 100), torch.float32, torch.float32, seed=2)
        check_against_reference(pattern, direction, triton_seam(pattern, direction), inputs)


@pytest.mark.interpreter
@pytest.mark.parametrize("pattern", PATTERNS[:3], ids=lambda p: p.name)
def test_bf16_operands_through_the_fp32_path(pattern):
    """The interpreter computes bf16 wrongly: on CPU, bf16 values run through the fp32 kernels and are rounded in torch."""
    inputs = operands(pattern, (3, 7, 100), torch.bfloat16, torch.bfloat16, seed=7)
    wide = [t.detach().float().requires_grad_() if t is not None else None for t in inputs]
    seam = triton_seam(pattern, "forward")
    check_against_reference(pattern, "forward", lambda *args: seam(*args), wide)
    y, n = seam(*[t.detach() if t is not None else None for t in wide])
    y_ref, n_ref = reference.seam_forward(pattern, *[t.detach() if t is not None else None for t in inputs])
    assert torch.equal(y.bfloat16(), y_ref)
    torch.testing.assert_close(n.bfloat16(), n_ref, atol=2e-2, rtol=2e-2)


@pytest.mark.interpreter
def test_non_contiguous_operands_give_the_contiguous_result():
    pattern = PATTERNS[0]
    x, f, weight, bias = (t.detach() for t in operands(pattern, (7, 3, 100), torch.float32, torch.float32, seed=3))
    y, n = runtime.seam_forward(x.transpose(0, 1), f.transpose(0, 1), weight, bias, eps=pattern.eps)
    y_ref, n_ref = runtime.seam_forward(x.transpose(0, 1).contiguous(), f.transpose(0, 1).contiguous(), weight, bias, eps=pattern.eps)
    assert torch.equal(y, y_ref) and torch.equal(n, n_ref)


@pytest.mark.interpreter
def test_rebuild_inverts_forward():
    pattern = PATTERNS[2]
    x, f, weight, _ = (t.detach() if t is not None else None for t in operands(pattern, (3, 7, 100), torch.float32, torch.float16, seed=5))
    y, n_forward = runtime.seam_forward(x, f, weight, eps=pattern.eps, norm="rmsnorm")
    rebuilt, n_rebuild = runtime.seam_rebuild(y, f, weight, eps=pattern.eps, norm="rmsnorm")
    torch.testing.assert_close(rebuilt, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(n_rebuild, reference.reference_norm(pattern, x, weight, None), atol=1e-5, rtol=1e-5)
    assert y.dtype == rebuilt.dtype == n_forward.dtype == torch.float32


@pytest.mark.interpreter
def test_operand_errors_are_reported():
    pattern = PATTERNS[0]
    x, f, weight, bias = (t.detach() for t in operands(pattern, (2, 3, 10), torch.float32, torch.float32, seed=1))
    with pytest.raises(ValueError, match="differ in shape"):
        runtime.seam_forward(x, f[:, :2], weight, bias)
    with pytest.raises(ValueError, match="expected \\(10,\\)"):
        runtime.seam_forward(x, f, weight[:5], bias)
    with pytest.raises(ValueError, match="up to"):
        runtime.seam_forward(torch.zeros(1, runtime.MAX_WIDTH + 1), torch.zeros(1, runtime.MAX_WIDTH + 1), norm="rmsnorm")


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="need CUDA tensors"):
        runtime.seam_forward(torch.zeros(2, 4), torch.zeros(2, 4), norm="rmsnorm")


@pytest.mark.interpreter
def test_empty_rows_give_empty_results():
    x = torch.zeros(0, 5, 12, requires_grad=True)
    weight = torch.ones(12, requires_grad=True)
    y, n = runtime.seam_forward(x, torch.zeros(0, 5, 12), weight, eps=1e-6, norm="rmsnorm")
    assert y.shape == n.shape == (0, 5, 12)
    (grad_weight,) = torch.autograd.grad(n.sum(), [weight])
    assert torch.equal(grad_weight, torch.zeros(12))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "dtypes", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16), (torch.float16, torch.float16)], ids=str
)
@pytest.mark.parametrize("shape", [(3, 7, 100), (4, 512, 2048)], ids=str)
@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
@pytest.mark.parametrize("direction", ["forward", "rebuild"])
def test_seam_kernel_on_cuda(pattern, shape, dtypes, direction):
    inputs = operands(pattern, shape, *dtypes, seed=11, device="cuda")
    check_against_reference(pattern, direction, triton_seam(pattern, direction), inputs)


@pytest.mark.interpreter
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "none"])
def test_leaf_gradients_do_not_share_storage(norm):
    """x + f has equal gradients for x and f; they must still be two tensors, or zeroing one .grad zeroes the other."""
    x, f = torch.randn(3, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True)
    y, n = runtime.seam_forward(x, f, eps=1e-5 if norm != "none" else 0.0, norm=norm)
    (y.sum() + n.pow(2).sum()).backward()
    expected = f.grad.clone()
    x.grad.zero_()
    assert torch.equal(f.grad, expected) and expected.abs().sum() > 0


@pytest.mark.interpreter
@pytest.mark.parametrize("pattern", PATTERNS[:3], ids=lambda p: p.name)
def test_backward_without_a_branch_writes_only_the_stream_gradient(pattern):
    """BRANCH_SIGN = 0 (the reversible runtime's norm backward): grad_src as with a branch, no branch gradient."""
    generator = torch.Generator().manual_seed(13)
    value, grad_out, grad_normed = (torch.randn(3, 7, 100, generator=generator) for _ in range(3))
    weight = torch.rand(100, generator=generator) + 0.5 if pattern.weight else None
    bias = torch.randn(100, generator=generator) if pattern.bias else None
    kernels = runtime.kernels_for(pattern)
    with_branch = runtime.launch_backward(kernels, value, grad_out, grad_normed, weight, bias, torch.float32, torch.float32, 1)
    alone = runtime.launch_backward(kernels, value, grad_out, grad_normed, weight, bias, torch.float32, torch.float32, 0)
    assert alone[1] is None
    for got, want in zip((alone[0], *alone[2:]), (with_branch[0], *with_branch[2:])):
        assert (got is None) == (want is None)
        if want is not None:
            assert torch.equal(got, want)
    leaf = value.clone().requires_grad_(True)
    normed = reference.reference_norm(pattern, leaf, weight, bias)
    (expected,) = torch.autograd.grad(normed, [leaf], grad_normed)
    torch.testing.assert_close(alone[0], grad_out + expected, rtol=1e-5, atol=1e-5)
