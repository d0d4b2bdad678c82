"""Token-weighted perplexity over a whole split, with sliding windows of a stated length and stride.

Windows of `window` tokens end every `stride` tokens (stride < window). Each window
scores only the tokens no earlier window scored, so every token after the first is
scored exactly once, and each has at least `window - stride` tokens of context (a
token of the first window has all the tokens before it). The perplexity is exp(sum of the negative
log-likelihoods / number of scored tokens): every token weighs the same, whatever
window it fell in (a mean of per-window means would overweight a short last window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bwsk.training.language_model import autocast, evaluating, logits_of


@dataclass(frozen=True)
class Window:
    """Tokens [begin, end) are fed to the model; tokens [scored_from, end) are scored."""

    begin: int
    end: int
    scored_from: int


@dataclass(frozen=True)
class WindowScore:
    """A window's summed negative log-likelihood (nats) over its `tokens` scored tokens."""

    window: Window
    nll: float
    tokens: int


@dataclass(frozen=True)
class Perplexity:
    """The perplexity of a split, the mean NLL per token behind it, and how it was computed (for results)."""

    perplexity: float
    nll: float
    tokens: int
    windows: int
    method: str

    def to_json(self) -> dict:
        return {"perplexity": self.perplexity, "nll_per_token": self.nll, "tokens_scored": self.tokens, "windows": self.windows}


def windows(length: int, window: int, stride: int) -> list[Window]:
    """The sliding windows over a stream of `length` tokens (see the module docstring).

    Window k ends at min(window + k * stride, length) and starts `window` tokens earlier
    (at 0 for the first), so every window but a lone short one is full.
    """
    if not 0 < stride < window:
        raise ValueError(f"the stride must be in 1..window - 1 ({window - 1}) so that each scored token has context, not {stride}")
    found, scored_from, end = [], 1, min(window, length)
    while True:
        found.append(Window(max(0, end - window), end, scored_from))
        if end >= length:
            return found
        scored_from, end = end, min(end + stride, length)


def method(window: int, stride: int, precision: str) -> str:
    """The sentence results quote to say how a perplexity was computed."""
    return (
        f"token-weighted: exp(total NLL / scored tokens) over the whole split; sliding windows of {window} tokens with stride "
        f"{stride}; every token after the first scored exactly once, with at least {window - stride} tokens of context; {precision}"
    )


def score_windows(
    model: nn.Module, tokens: torch.Tensor, *, window: int, stride: int, batch_size: int = 8, dtype: torch.dtype | None = None
) -> list[WindowScore]:
    """Each window's NLL sum and scored-token count; windows of equal length run `batch_size` at a time."""
    device = next(model.parameters()).device
    planned = windows(tokens.numel(), window, stride)
    scores: dict[Window, WindowScore] = {}
    by_length: dict[int, list[Window]] = {}
    for item in planned:
        by_length.setdefault(item.end - item.begin, []).append(item)
    with evaluating(model):
        for group in by_length.values():
            for first in range(0, len(group), batch_size):
                chunk = group[first : first + batch_size]
                ids = torch.stack([tokens[w.begin : w.end] for w in chunk]).to(device)
                with autocast(device, dtype):
                    logits = logits_of(model(ids))
                nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
                for row, item in enumerate(chunk):
                    scored = nll[row, item.scored_from - item.begin - 1 :]
                    scores[item] = WindowScore(item, float(scored.double().sum()), scored.numel())
    return [scores[item] for item in planned]


def perplexity(
    model: nn.Module,
    tokens: torch.Tensor,
    *,
    window: int,
    stride: int,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
    precision: str = "fp32",
) -> Perplexity:
    """Token-weighted perplexity of `model` on the 1-D stream `tokens` (`precision` names `dtype` in the method)."""
    scores = score_windows(model, tokens, window=window, stride=stride, batch_size=batch_size, dtype=dtype)
    total = sum(score.tokens for score in scores)
    if total == 0:
        raise ValueError("a perplexity needs at least 2 tokens")
    nll = sum(score.nll for score in scores) / total
    value = math.exp(nll) if nll < math.log(torch.finfo(torch.float64).max) else math.inf
    return Perplexity(value, nll, total, len(scores), method(window, stride, precision))
