"""The chunked next-token loss against the full-logits one (`lm_loss`): the loss and every gradient, fresh random inputs.

Tolerances are on relative norms. fp32: 1e-6 (measured at most 7e-7: summation order only). bf16 autocast: the
chunked loss computes the logits in bf16 as the model does but accumulates the head's gradients in fp32, so it is
at least as close to the fp32 result as the full-logits path; it is held to 2x the full path's own bf16 error
(flash-attention's rule) and within 1e-2 of the full path (measured 3e-3, bf16's rounding is 3.9e-3).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import transformers
from training.tiny_models import FAMILIES, VOCAB, tiny_model

from bwsk.errors import BwskError
from bwsk.training.language_model import IGNORE_INDEX, chunked_lm_loss, evaluating, lm_loss, logits_of, next_token_loss
from bwsk.training.modes.apply import apply_mode
from bwsk.training.modes.peak_tracker import PeakTracker

FP32 = 1e-6
BF16_TO_FULL = 1e-2
ZERO_UP_TO_ROUNDING = 1e-9  # absolute floor: an attention key bias's gradient is 0 but for rounding (softmax ignores a shared shift)


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float, name: str = "") -> None:
    got, want = got.detach().double(), want.detach().double()
    error, scale = float((got - want).norm()), float(want.norm())
    assert error <= rtol * scale + ZERO_UP_TO_ROUNDING, f"{name}: {error} vs norm {scale}"


def head_inputs(batch: int, seq: int, width: int, vocab: int, *, seed: int, bias: bool = True):
    """(hidden, weight, bias or None, labels) drawn from `seed`, the floating ones requiring grad."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, width, generator=generator).requires_grad_()
    weight = (torch.randn(vocab, width, generator=generator) / width**0.5).requires_grad_()
    offset = torch.randn(vocab, generator=generator).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, (batch, seq), generator=generator)
    return hidden, weight, offset, labels


def full_loss(hidden, weight, bias, labels, softcap=None):
    logits = F.linear(hidden, weight, bias)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return lm_loss(logits, labels)


def loss_and_gradients(loss: torch.Tensor, inputs) -> list[torch.Tensor]:
    wanted = [x for x in inputs if x is not None and x.requires_grad]
    return [loss.detach(), *torch.autograd.grad(loss, wanted)]


SHAPES = [  # batch, seq, width, vocab, chunk_tokens
    (2, 7, 16, 37, 3),  # the tokens (14) not a multiple of the chunk, a prime vocabulary
    (1, 5, 8, 131, 1),  # one token per chunk
    (3, 4, 8, 29, 100),  # one chunk holds every token
    (2, 9, 12, 53, None),  # the default chunk
]


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_loss_and_gradients_equal_the_full_logits_path_fp32(shape, bias, softcap):
    batch, seq, width, vocab, chunk = shape
    hidden, weight, offset, labels = head_inputs(batch, seq, width, vocab, seed=sum(shape[:4]), bias=bias)
    labels[0, 2] = IGNORE_INDEX
    inputs = (hidden, weight, offset)
    got = loss_and_gradients(chunked_lm_loss(hidden, labels, weight, offset, softcap=softcap, chunk_tokens=chunk), inputs)
    want = loss_and_gradients(full_loss(hidden, weight, offset, labels, softcap), inputs)
    for name, a, b in zip(("loss", "hidden", "weight", "bias"), got, want):
        assert_close(a, b, FP32, name)


def test_ignored_rows_are_not_scored_and_get_no_gradient():
    hidden, weight, offset, labels = head_inputs(3, 6, 8, 41, seed=7)
    labels[1] = IGNORE_INDEX  # a whole row
    labels[2, 1:4] = IGNORE_INDEX
    inputs = (hidden, weight, offset)
    got = loss_and_gradients(chunked_lm_loss(hidden, labels, weight, offset, chunk_tokens=4), inputs)
    want = loss_and_gradients(full_loss(hidden, weight, offset, labels), inputs)
    for name, a, b in zip(("loss", "hidden", "weight", "bias"), got, want):
        assert_close(a, b, FP32, name)
    assert got[1][1, :-1].abs().max() == 0  # positions predicting an ignored label
    assert got[1][:, -1].abs().max() == 0  # the last position predicts nothing


def test_a_batch_with_nothing_to_score_has_loss_zero_and_zero_gradients():
    hidden, weight, offset, labels = head_inputs(2, 5, 8, 23, seed=3)
    labels.fill_(IGNORE_INDEX)
    assert full_loss(hidden, weight, offset, labels).isnan()  # what the full path gives
    loss, *grads = loss_and_gradients(chunked_lm_loss(hidden, labels, weight, offset, chunk_tokens=3), (hidden, weight, offset))
    assert loss.item() == 0.0
    assert all(g.isfinite().all() and g.abs().max() == 0 for g in grads)


def test_a_tied_weight_gets_the_embedding_and_the_head_gradient_summed():
    torch.manual_seed(0)
    embedding, mixer = torch.nn.Embedding(43, 16), torch.nn.Linear(16, 16)
    ids = torch.randint(0, 43, (2, 9))

    def loss(chunked: bool) -> list[torch.Tensor]:
        hidden = torch.tanh(mixer(embedding(ids)))
        value = (
            chunked_lm_loss(hidden, ids, embedding.weight, chunk_tokens=4) if chunked else full_loss(hidden, embedding.weight, None, ids)
        )
        return loss_and_gradients(value, (embedding.weight, mixer.weight))

    for name, a, b in zip(("loss", "tied weight", "mixer"), loss(True), loss(False)):
        assert_close(a, b, FP32, name)


def test_a_frozen_head_gets_no_gradient_and_the_hidden_states_theirs():
    hidden, weight, offset, labels = head_inputs(2, 6, 8, 31, seed=5)
    weight.requires_grad_(False)
    offset.requires_grad_(False)
    loss = chunked_lm_loss(hidden, labels, weight, offset, chunk_tokens=5)
    loss.backward()
    assert weight.grad is None and offset.grad is None
    (want,) = torch.autograd.grad(full_loss(hidden, weight, offset, labels), hidden)
    assert_close(hidden.grad, want, FP32, "hidden")


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_autocast_is_as_close_to_fp32_as_the_full_logits_path(seed):
    hidden, weight, offset, labels = head_inputs(3, 13, 24, 101, seed=seed)
    inputs = (hidden, weight, offset)
    exact = loss_and_gradients(full_loss(hidden, weight, offset, labels), inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked_value = chunked_lm_loss(hidden, labels, weight, offset, chunk_tokens=5)
        full_value = full_loss(hidden, weight, offset, labels)
    assert chunked_value.dtype == full_value.dtype == torch.float32
    chunked, full = loss_and_gradients(chunked_value, inputs), loss_and_gradients(full_value, inputs)
    assert_close(chunked[0], full[0], FP32, "loss")  # the same bf16 logits, softmax in fp32
    for name, a, b, c in zip(("hidden", "weight", "bias"), chunked[1:], full[1:], exact[1:]):
        assert relative(a, b) <= BF16_TO_FULL, name
        assert relative(a, c) <= 2 * relative(b, c), name


def model_loss_and_gradients(model, ids, *, chunked: bool, autocast: bool = False, **options) -> dict[str, torch.Tensor]:
    """The loss and every parameter's gradient (dropout masks drawn from the same seed on both paths)."""
    torch.manual_seed(11)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = next_token_loss(model, ids, chunked=chunked, **options) if chunked else lm_loss(logits_of(model(ids)), ids)
    names, parameters = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    return {"loss": loss.detach(), **dict(zip(names, torch.autograd.grad(loss, parameters)))}


def ids_for(seed: int, size: tuple[int, int] = (2, 12)) -> torch.Tensor:
    return torch.randint(0, VOCAB, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gets_the_full_logits_loss_and_gradients(family):
    model, ids = tiny_model(family, seed=2), ids_for(2)
    got = model_loss_and_gradients(model, ids, chunked=True, chunk_tokens=5)
    want = model_loss_and_gradients(model, ids, chunked=False)
    assert got.keys() == want.keys()
    for name in want:
        assert_close(got[name], want[name], FP32, name)
    assert model(ids).logits.shape == (*ids.shape, VOCAB)  # the head is the model's own again


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_under_bf16_autocast(family):
    model, ids = tiny_model(family, seed=3), ids_for(3)
    got = model_loss_and_gradients(model, ids, chunked=True, autocast=True, chunk_tokens=5)
    want = model_loss_and_gradients(model, ids, chunked=False, autocast=True)
    assert_close(got["loss"], want["loss"], FP32, "loss")
    for name in want:
        assert_close(got[name], want[name], BF16_TO_FULL, name)


def test_backward_passes_through_the_models_output_as_fsdp2_hooks_it():
    model, fired = tiny_model("llama"), []

    def hook_the_output(module, args, output):
        output.logits.register_hook(lambda grad: fired.append(grad.shape))  # where FSDP2 puts its root's pre-backward

    model.register_forward_hook(hook_the_output)
    next_token_loss(model, ids_for(8)).backward()
    assert fired == [(2, 12, 0)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["checkpoint", "reversible"])
def test_a_model_in_a_training_mode_gets_its_own_full_logits_gradients(mode):
    model, ids = apply_mode(tiny_model("llama", dropout=0.0), mode), ids_for(4)
    got = model_loss_and_gradients(model, ids, chunked=True, chunk_tokens=7)
    want = model_loss_and_gradients(model, ids, chunked=False)
    for name in want:
        assert_close(got[name], want[name], FP32, name)


def test_a_gemma2_softcap_is_applied_in_the_chunks():
    config = transformers.Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        max_position_embeddings=64,
        final_logit_softcapping=0.5,  # small enough to matter for random logits
    )
    torch.manual_seed(0)
    model, ids = transformers.Gemma2ForCausalLM(config), ids_for(5)
    got = model_loss_and_gradients(model, ids, chunked=True, chunk_tokens=5)
    want = model_loss_and_gradients(model, ids, chunked=False)
    for name in want:
        assert_close(got[name], want[name], FP32, name)


class ScaledHead(torch.nn.Module):
    """A causal LM whose logits are changed after the head (as Cohere's logit scale does), or whose head runs twice."""

    def __init__(self, twice: bool = False):
        super().__init__()
        self.embedding, self.head, self.twice = torch.nn.Embedding(VOCAB, 8), torch.nn.Linear(8, VOCAB), twice

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.head

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(ids)
        return self.head(hidden) + self.head(hidden) if self.twice else 2 * self.head(hidden)


@pytest.mark.parametrize(("twice", "message"), [(False, "changes its logits after the output head"), (True, "twice")])
def test_a_head_the_chunks_cannot_follow_is_refused_in_one_line(twice, message):
    with pytest.raises(BwskError, match=message) as caught:
        next_token_loss(ScaledHead(twice), ids_for(6))
    assert "\n" not in str(caught.value)


def test_a_model_without_a_linear_head_is_scored_on_its_logits():
    model, ids = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 8), torch.nn.Linear(8, VOCAB)), ids_for(7)
    assert_close(next_token_loss(model, ids), lm_loss(model(ids), ids), 0.0, "loss")


def peak_bytes(model: torch.nn.Module, ids: torch.Tensor, *, chunked: bool) -> int:
    """MemTracker's peak over forward, loss and backward (global peak only: see `PeakTracker`)."""
    tracker = PeakTracker()
    tracker.track_external(model, ids)
    with tracker:
        next_token_loss(model, ids, chunked=chunked).backward()
    (categories,) = tracker.get_tracker_snapshot("peak").values()
    model.zero_grad(set_to_none=True)
    return int(next(v for k, v in categories.items() if str(getattr(k, "value", k)) == "Total"))


@pytest.mark.slow
def test_the_chunked_step_peaks_at_least_a_logits_tensor_lower():
    config = transformers.GPTNeoXConfig(
        vocab_size=8192, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=512
    )
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(config)
    ids = torch.randint(0, 8192, (2, 512))  # 1024 tokens: the default chunk (MIN_CHUNK_TOKENS) is a quarter of them
    logits_bytes = ids.numel() * config.vocab_size * 4
    full, chunked = peak_bytes(copy.deepcopy(model), ids, chunked=False), peak_bytes(model, ids, chunked=True)
    assert chunked <= full - logits_bytes, (chunked, full, logits_bytes)


def test_evaluating_restores_the_training_flag_even_after_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    with pytest.raises(RuntimeError, match="inside"), evaluating(model):
        assert not model.training and not torch.is_grad_enabled()
        raise RuntimeError("inside")
    assert model.training and torch.is_grad_enabled()
