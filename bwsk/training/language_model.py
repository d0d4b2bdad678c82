"""What training reads of a causal language model: its logits, its next-token loss, the precision it runs in.

Invariant: `lm_loss(logits, ids)` is the mean cross-entropy of token t+1 given tokens up to t,
over every position but the last, as Hugging Face's `labels=input_ids` loss computes it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`, or nothing for None (full precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


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
