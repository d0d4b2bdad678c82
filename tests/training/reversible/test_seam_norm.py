"""Which leading norms a seam computes: recognised by behaviour, and the seams' norm backward against autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from bwsk.training.reversible.seams import TorchSeam, TritonSeam, normalised, seam_norm_of

RECOGNISED = {
    "layernorm": (lambda: nn.LayerNorm(24), ("layernorm", True, True, 1e-5)),
    "layernorm-no-bias": (lambda: nn.LayerNorm(24, eps=1e-6, bias=False), ("layernorm", True, False, 1e-6)),
    "layernorm-no-affine": (lambda: nn.LayerNorm(24, elementwise_affine=False), ("layernorm", False, False, 1e-5)),
    "llama-rmsnorm": (lambda: LlamaRMSNorm(24, eps=1e-6), ("rmsnorm", True, False, 1e-6)),
    "torch-rmsnorm": (lambda: nn.RMSNorm(24, eps=1e-5), ("rmsnorm", True, False, 1e-5)),
}


def hooked() -> nn.Module:
    norm = nn.LayerNorm(24)
    norm.register_forward_hook(lambda module, args, out: out * 2)
    return norm


REFUSED = {
    "gemma (1 + weight)": lambda: GemmaRMSNorm(24),
    "rmsnorm without eps": lambda: nn.RMSNorm(24),
    "linear": lambda: nn.Linear(24, 24),
    "two-dimensional layernorm": lambda: nn.LayerNorm((3, 24)),
    "hooked layernorm": hooked,
    "meta layernorm": lambda: nn.LayerNorm(24, device="meta"),
    "sequential": lambda: nn.Sequential(nn.LayerNorm(24)),
}


@pytest.mark.parametrize("name", RECOGNISED)
def test_recognised_norms_compute_what_the_module_computes(name):
    build, (kind, weight, bias, eps) = RECOGNISED[name]
    module = build()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape))  # fresh weights, not the ones the probe used
    norm = seam_norm_of(module)
    assert norm is not None
    assert (norm.pattern.norm, norm.pattern.weight, norm.pattern.bias, norm.pattern.eps) == (kind, weight, bias, eps)
    x = torch.randn(2, 5, 24) * 2 + 0.7
    torch.testing.assert_close(normalised(x, norm), module(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", REFUSED)
def test_other_modules_are_left_to_themselves(name):
    assert seam_norm_of(REFUSED[name]()) is None


@pytest.mark.interpreter
def test_without_a_norm_the_stream_passes_unchanged():
    x = torch.randn(3, 4)
    assert normalised(x, None) is x
    for seam in (TorchSeam(), TritonSeam()):
        y, n = seam.add(x, x, None)
        assert n is y and torch.equal(y, 2 * x)


@pytest.mark.interpreter
@pytest.mark.parametrize("name", ["layernorm", "layernorm-no-bias", "llama-rmsnorm"])
@pytest.mark.parametrize("shape", [(3, 7, 24), (1, 1, 24)], ids=str)
def test_norm_backward_equals_autograd_through_the_module(name, shape):
    """grad_stream + norm'(value)^T grad_normed and the weight/bias gradients, torch seam and Triton seam (interpreter)."""
    module = RECOGNISED[name][0]()
    generator = torch.Generator().manual_seed(len(shape))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    norm = seam_norm_of(module)
    value, grad_stream, grad_normed = (torch.randn(shape, generator=generator) for _ in range(3))
    leaf = value.clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    module(leaf).backward(grad_normed)
    bias = getattr(module, "bias", None)
    want = (grad_stream + leaf.grad, module.weight.grad, None if bias is None else bias.grad)
    for seam in (TorchSeam(), TritonSeam()):
        got = seam.norm_backward(value, grad_stream, grad_normed, norm)
        for g, w in zip(got, want):
            assert (g is None) == (w is None), seam.name
            if w is not None:
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=seam.name)


@pytest.mark.interpreter
@pytest.mark.parametrize("direction", ["add", "subtract"])
def test_fused_seams_agree_and_normalise_their_result(direction):
    norm = seam_norm_of(LlamaRMSNorm(24, eps=1e-6))
    generator = torch.Generator().manual_seed(5)
    stream, branch = torch.randn(2, 3, 24, generator=generator), torch.randn(2, 3, 24, generator=generator)
    torch_out, torch_n = getattr(TorchSeam(), direction)(stream, branch, norm)
    triton_out, triton_n = getattr(TritonSeam(), direction)(stream, branch, norm)
    torch.testing.assert_close(torch_out, stream + branch if direction == "add" else stream - branch, rtol=0, atol=0)
    torch.testing.assert_close(triton_out, torch_out, rtol=0, atol=0)
    torch.testing.assert_close(triton_n, torch_n, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch_n, norm.module(torch_out), rtol=1e-5, atol=1e-5)
