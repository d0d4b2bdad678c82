"""bwsk's chunked LM-head loss against Liger-Kernel's fused linear cross-entropy: the same loss and gradients.

Liger's `LigerFusedLinearCrossEntropyLoss` (the optional `liger` extra) runs the projection and the cross-entropy a
chunk of tokens at a time in Triton kernels. On CPU tensors they run in Triton's interpreter, which reads
TRITON_INTERPRET=1 when a kernel is decorated, that is when liger_kernel is imported: tests/conftest.py sets it
before any test module is imported, so these tests are `interpreter`-marked (skipped where CUDA compiles the kernels
instead). fp32 only: the interpreter computes bf16 wrongly.

Labels: `chunked_lm_loss` takes the input ids and shifts them itself (hidden state t predicts label t + 1); Liger
takes targets aligned with its rows, so it gets each sequence's labels from position 1 on and IGNORE_INDEX at its
last position, which predicts nothing. No softcap: Liger's kernel calls `.to` on its float `softcap` argument, which
the interpreter hands it as a Python float (AttributeError); compiled Triton wraps it.

Tolerance: relative norm 1e-6 for the loss and each gradient (measured at most 2e-7): both sum the same fp32 terms,
in other orders and other chunks (Liger picks its own chunk from the shapes).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bwsk.training.language_model import IGNORE_INDEX, chunked_lm_loss

liger = pytest.importorskip("liger_kernel.transformers", reason="Liger-Kernel is optional: pip install -e '.[liger]'")

pytestmark = pytest.mark.interpreter

FP32 = 1e-6
IGNORED_SHARE = 0.2


def assert_close(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    got, want = got.detach().double(), want.detach().double()
    error, scale = float((got - want).norm()), float(want.norm())
    assert scale > 0 and error <= FP32 * scale, f"{name}: error {error} vs norm {scale}"


def head_inputs(batch: int, seq: int, width: int, vocab: int, *, seed: int, bias: bool):
    """(hidden, weight, bias or None, labels), the floating ones requiring grad, a share of labels IGNORE_INDEX."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, width, generator=generator).requires_grad_()
    weight = (torch.randn(vocab, width, generator=generator) / width**0.5).requires_grad_()
    offset = torch.randn(vocab, generator=generator).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, (batch, seq), generator=generator)
    labels[torch.rand(batch, seq, generator=generator) < IGNORED_SHARE] = IGNORE_INDEX
    return hidden, weight, offset, labels


def aligned_targets(labels: torch.Tensor) -> torch.Tensor:
    """The label each hidden state predicts, flattened: the next position's, IGNORE_INDEX after a sequence's end."""
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1).reshape(-1)


def liger_loss(hidden, weight, bias, labels):
    loss = liger.LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX)
    return loss(weight, hidden.reshape(-1, hidden.shape[-1]), aligned_targets(labels), bias)


def full_loss(hidden, weight, bias, labels):
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), aligned_targets(labels))


CASES = [  # batch, seq, width, vocab, bias, bwsk's chunk_tokens
    (2, 37, 48, 301, False, 16),  # 74 tokens: 4 chunks of 16 and one of 10
    (3, 11, 40, 257, True, 7),  # a bias; 33 tokens: 4 chunks of 7 and one of 5
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=["no-bias", "bias"])
def test_liger_and_the_chunked_loss_agree_on_the_loss_and_every_gradient_fp32(case):
    batch, seq, width, vocab, bias, chunk = case
    hidden, weight, offset, labels = head_inputs(batch, seq, width, vocab, seed=seq, bias=bias)
    assert (labels == IGNORE_INDEX).any() and (labels != IGNORE_INDEX).any()
    inputs = [x for x in (hidden, weight, offset) if x is not None]
    names = ("loss", "hidden", "weight", "bias")

    def loss_and_gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        assert loss.dtype == torch.float32 and loss.shape == ()
        return [loss.detach(), *torch.autograd.grad(loss, inputs)]

    bwsk = loss_and_gradients(chunked_lm_loss(hidden, labels, weight, offset, chunk_tokens=chunk))
    fused = loss_and_gradients(liger_loss(hidden, weight, offset, labels))
    reference = loss_and_gradients(full_loss(hidden, weight, offset, labels))
    for name, got, want in zip(names, fused, bwsk):
        assert_close(got, want, f"Liger vs bwsk, {name}")
    for name, got, want in zip(names, fused, reference):
        assert_close(got, want, f"Liger vs full logits, {name}")
    assert bwsk[1][:, -1].abs().max() == 0 == fused[1][:, -1].abs().max()  # the last position predicts nothing
