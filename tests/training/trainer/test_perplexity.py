"""Token-weighted sliding-window perplexity: exact on a model whose probabilities are known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bwsk.training.trainer.evaluation import perplexity, score_windows, windows

VOCAB = 11


class Bigram(nn.Module):
    """Logits that depend only on the current token: p(next | context) = softmax(table[current])."""

    def __init__(self, seed: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(seed)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


def _expected_nll(model: Bigram, tokens: torch.Tensor) -> float:
    """Mean NLL of every token after the first, from the table directly (fp64)."""
    log_probs = torch.log_softmax(model.table.detach().double(), dim=-1)
    return -sum(float(log_probs[a, b]) for a, b in zip(tokens[:-1].tolist(), tokens[1:].tolist())) / (tokens.numel() - 1)


@pytest.mark.parametrize("length,window,stride", [(2, 8, 4), (50, 8, 4), (53, 8, 3), (64, 16, 15), (37, 37, 1), (100, 7, 6), (5, 64, 32)])
def test_every_token_after_the_first_is_scored_once_with_the_stated_context(length, window, stride):
    planned = windows(length, window, stride)
    scored = [t for w in planned for t in range(w.scored_from, w.end)]
    assert scored == list(range(1, length))
    assert all(w.end - w.begin <= window for w in planned)
    assert all(w.scored_from - w.begin >= window - stride for w in planned[1:])


@pytest.mark.parametrize("length,window,stride,batch", [(50, 8, 4, 3), (53, 8, 3, 1), (40, 40, 20, 8), (97, 16, 5, 4)])
def test_perplexity_of_a_known_model_is_exact(length, window, stride, batch):
    model = Bigram(seed=length)
    tokens = torch.randint(0, VOCAB, (length,), generator=torch.Generator().manual_seed(window))
    result = perplexity(model, tokens, window=window, stride=stride, batch_size=batch)
    expected = _expected_nll(model, tokens)
    assert result.tokens == length - 1
    assert result.nll == pytest.approx(expected, rel=1e-6)
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-6)
    assert f"windows of {window} tokens with stride {stride}" in result.method and "token-weighted" in result.method


def test_token_weighting_differs_from_the_mean_of_window_means_on_an_uneven_split():
    model = Bigram(seed=0)
    with torch.no_grad():
        model.table[:, 3] += 6.0  # token 3 is very likely after anything: a window full of 3s scores low
    tokens = torch.cat([torch.randint(0, VOCAB, (33,), generator=torch.Generator().manual_seed(1)), torch.full((3,), 3)])
    scores = score_windows(model, tokens, window=16, stride=8)
    assert [s.tokens for s in scores] == [15, 8, 8, 4]  # the short last window holds the easy tokens
    mean_of_means = math.exp(sum(s.nll / s.tokens for s in scores) / len(scores))
    token_weighted = perplexity(model, tokens, window=16, stride=8)
    assert token_weighted.perplexity == pytest.approx(math.exp(_expected_nll(model, tokens)), rel=1e-6)
    assert abs(mean_of_means - token_weighted.perplexity) > 0.05 * token_weighted.perplexity


def test_evaluation_leaves_the_training_flag_as_it_was():
    model = Bigram(seed=1).train()
    perplexity(model, torch.arange(10) % VOCAB, window=4, stride=2)
    assert model.training


def test_a_stride_longer_than_the_window_is_refused():
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 4)
