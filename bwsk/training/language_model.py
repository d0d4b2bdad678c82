"""What training reads of a causal language model: its logits, its next-token loss, the precision it runs in.

Invariants:
  - `lm_loss(logits, ids)` is the mean cross-entropy of token t+1 given tokens up to t, over every position but
    the last, as Hugging Face's `labels=input_ids` loss computes it;
  - `chunked_lm_loss(hidden, labels, weight, bias)` is the same loss of the logits `hidden @ weight.T + bias`
    (softcapped where asked), with the same gradients (but 0, not NaN, when no label is scored), computed a chunk of
    tokens at a time: neither the B x T x V logits nor their gradient ever exist whole;
  - `next_token_loss(model, ids)` is `lm_loss(logits_of(model(ids)), ids)` of a causal LM whose output head is a
    linear layer, computed by `chunked_lm_loss` from the hidden states the model hands its head (the head never
    computes logits); other models, or `chunked=False`, take the full-logits path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.parallel import DistributedDataParallel

from bwsk.errors import BwskError

IGNORE_INDEX = -100  # a label that is not scored (PyTorch's and Hugging Face's convention)
MIN_CHUNK_TOKENS = 256  # a default chunk: 51 MiB of fp32 logits at vocabulary 50k, 131 MiB at 128k


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`, or nothing for None (full precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode without autograd within; its training flag restored after, whatever happens."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(training)


def logits_of(output: object) -> torch.Tensor:
    """The logits of a model's output: `.logits` of a transformers output, the first item of a tuple, or the tensor."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)):
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"cannot find the logits in a {type(output).__name__}")
    return logits


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (fp32): logits at position t predict token t + 1."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), input_ids[:, 1:].reshape(-1))


def next_token_loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    chunked: bool = True,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """`model`'s next-token loss on `input_ids`: `lm_loss(logits_of(model(input_ids)), input_ids)`, computed in chunks.

    Chunked (the default) for a model whose output head (`get_output_embeddings()`, looked up through a DDP
    wrapper) is an `nn.Linear`: the model runs as it is (wrapper, training mode and hooks included) while its head,
    instead of computing logits, computes `chunked_lm_loss` of the hidden states it is handed, inside the forward
    (so an FSDP-gathered weight is the one used), and hands back a B x T x 0 tensor as the logits. The loss returned
    adds that output's (empty) sum, so backward passes through the model's output as it would with real logits:
    FSDP2 hooks its root's pre-backward there (without it the root's gradients are never reduced). Gemma 2's
    `final_logit_softcapping` is applied in the chunks; a model that changes its logits after the head in another
    way is refused in one line. Other models, and `chunked=False`, score the full logits with `lm_loss`.
    """
    head = _output_head(model)
    if not chunked or head is None:
        return lm_loss(logits_of(model(input_ids)), input_ids)
    softcap = getattr(getattr(_unwrapped(model), "config", None), "final_logit_softcapping", None)
    losses: list[torch.Tensor] = []
    stand_ins: list[torch.Tensor] = []

    def loss_instead_of_logits(hidden: torch.Tensor) -> torch.Tensor:
        if losses:
            raise BwskError(f"{type(_unwrapped(model)).__name__} calls its output head twice in one forward; use full logits")
        losses.append(chunked_lm_loss(hidden, input_ids, head.weight, head.bias, softcap=softcap, chunk_tokens=chunk_tokens))
        stand_in = hidden.new_empty((*hidden.shape[:-1], 0), dtype=_compute_dtype(hidden, head.weight))
        stand_ins.append(stand_in.requires_grad_(torch.is_grad_enabled()))
        return stand_in

    with _forward_replaced(head, loss_instead_of_logits):
        output = model(input_ids)
    name = type(_unwrapped(model)).__name__
    if not losses:
        raise BwskError(f"{name} never called its output head (get_output_embeddings()); use full logits")
    logits = logits_of(output)
    if softcap is None and logits is not stand_ins[0]:
        raise BwskError(f"{name} changes its logits after the output head, which the chunked loss cannot follow; use full logits")
    return losses[0] + logits.sum()  # + 0: backward passes the model's output, as FSDP2's root expects (see above)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 wraps in place: the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _output_head(model: nn.Module) -> nn.Linear | None:
    """The linear layer that turns `model`'s final hidden states into logits (None: not found, or not linear)."""
    get = getattr(_unwrapped(model), "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Linear) else None


@contextlib.contextmanager
def _forward_replaced(module: nn.Module, forward: Callable[..., torch.Tensor]) -> Iterator[None]:
    """While active, calling `module` (its hooks included) runs `forward` instead of its own."""
    own = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def chunked_lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    softcap: float | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy (fp32) of the logits `hidden @ weight.T + bias`, a chunk of tokens at a time.

    `hidden` (B, T, H) at position t predicts `labels` (B, T) at t + 1; labels equal to IGNORE_INDEX are not
    scored; the loss is the mean over the scored tokens, and 0 (with zero gradients, not NaN) when none is.
    `softcap` caps the logits as Gemma 2 does (`cap * tanh(logits / cap)`). Logits are computed in the autocast
    dtype where autocast is on (else in `hidden`'s and `weight`'s), softmax and sums in fp32; the weight's and
    bias's gradients are accumulated in fp32. `chunk_tokens` (default: as many tokens as keep a chunk's logits
    no larger than `hidden`, and at least `MIN_CHUNK_TOKENS`, so each chunk's matmul stays large enough to run
    at speed) bounds the temporaries to a few chunk x V tensors.
    """
    batch, seq, width = hidden.shape
    if labels.shape != (batch, seq):
        raise ValueError(f"labels {tuple(labels.shape)} do not match the hidden states {tuple(hidden.shape)}")
    targets = torch.cat([labels[:, 1:], labels.new_full((batch, 1), IGNORE_INDEX)], dim=1).reshape(-1)
    tokens, vocab = batch * seq, weight.shape[0]
    chunk = max(MIN_CHUNK_TOKENS, tokens * width // vocab) if chunk_tokens is None else chunk_tokens
    if chunk < 1:
        raise ValueError(f"chunk_tokens must be at least 1, not {chunk}")
    compute = _compute_dtype(hidden, weight)
    return _ChunkedHeadLoss.apply(hidden.reshape(tokens, width), targets, weight, bias, softcap, min(chunk, tokens), compute)


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer computes its logits in here: autocast's where it is on, else the inputs' promoted."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


class _ChunkedHeadLoss(torch.autograd.Function):
    """The chunked loss; backward recomputes each chunk's logits (see below) rather than storing gradients in forward.

    Why recompute: the two designs reach the same peak (at their worst moment both hold the hidden states, their
    gradient, the fp32 weight gradient and one chunk's temporaries: gradient-in-forward during the forward, when
    the caller still holds `hidden`; recompute at the start of backward, when it keeps `hidden` for the recompute).
    Between forward and backward, recompute keeps only `hidden` (B x T x H, which the model's graph usually holds
    anyway), while gradient-in-forward keeps the hidden states' gradient and a weight-sized fp32 gradient (V x H x 4
    bytes) and must scale both by the incoming gradient in place. So recompute keeps less for as long as anything
    runs between the two (other micro-batches' forwards, a memory measurement, pipelining), does no gradient work
    when none is asked for, and costs one chunk x H x V matmul more per chunk.
    """

    @staticmethod
    def forward(ctx, hidden, targets, weight, bias, softcap, chunk, compute):
        valid = targets != IGNORE_INDEX
        safe = torch.where(valid, targets, 0)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            head = _Head(weight, bias, softcap, compute)
            for start in range(0, hidden.shape[0], chunk):
                rows = slice(start, start + chunk)
                scores, _ = head.scores(hidden[rows])
                picked = scores.gather(1, safe[rows, None]).squeeze(1)
                total += ((torch.logsumexp(scores, dim=1) - picked) * valid[rows]).sum()
        count = valid.sum().clamp_min(1)
        ctx.save_for_backward(hidden, targets, weight, bias, count)
        ctx.softcap, ctx.chunk, ctx.compute = softcap, chunk, compute
        return total / count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        hidden, targets, weight, bias, count = ctx.saved_tensors
        wants_hidden, _, wants_weight, wants_bias = ctx.needs_input_grad[:4]
        valid = targets != IGNORE_INDEX
        safe = torch.where(valid, targets, 0)
        row_scale = valid * (grad_loss.float() / count)
        grad_hidden = torch.empty_like(hidden) if wants_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if wants_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if wants_bias else None
        with torch.autocast(hidden.device.type, enabled=False):
            head = _Head(weight, bias, ctx.softcap, ctx.compute)
            for start in range(0, hidden.shape[0], ctx.chunk):
                rows = slice(start, start + ctx.chunk)
                scores, capped = head.scores(hidden[rows])
                grad = scores.sub_(torch.logsumexp(scores, dim=1, keepdim=True)).exp_()  # softmax, in place
                grad.scatter_add_(1, safe[rows, None], -torch.ones_like(grad[:, :1]))
                grad.mul_(row_scale[rows, None])
                if capped is not None:  # d(cap * tanh(z / cap)) / dz = 1 - tanh(z / cap)^2
                    grad.mul_(1 - capped.square_())
                if grad_hidden is not None:
                    grad_hidden[rows] = grad.to(ctx.compute) @ head.weight
                if grad_weight is not None:
                    grad_weight.addmm_(grad.T, hidden[rows].float())
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        grad_bias = None if grad_bias is None else grad_bias.to(bias.dtype)
        return grad_hidden, None, grad_weight, grad_bias, None, None, None


class _Head:
    """The output projection in the compute dtype (its weight cast once per forward or backward)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None, compute: torch.dtype):
        self.weight = weight.to(compute)
        self.bias = None if bias is None else bias.to(compute)
        self.softcap, self.compute = softcap, compute

    def scores(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(fp32 logits of `hidden`'s rows, softcapped if asked; tanh(z / cap), or None without a cap)."""
        logits = F.linear(hidden.to(self.compute), self.weight, self.bias).float()
        if self.softcap is None:
            return logits, None
        capped = logits.div_(self.softcap).tanh_()
        return capped * self.softcap, capped
