"""make_reversible on every supported family (tiny models built with their configs' defaults): gradients against plain autograd."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from training.gradient_check import BF16_RTOL, FP32_RTOL, assert_same_gradients, batch, gradients
from training.tiny_models import FAMILIES
from training.tiny_models import tiny_model as build

from bwsk.training.modes.peak_tracker import PeakTracker
from bwsk.training.reversible.convert import make_reversible, plain_autograd, reversible_runtime
from bwsk.training.reversible.drift import DriftMonitor
from bwsk.training.reversible.errors import ConversionError

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_equal_plain_autograd_with_dropout_and_frozen_embeddings(family):
    """Built with the config's defaults (sdpa, use_cache on), dropout on, embeddings frozen (the stack's input needs no grad)."""
    model = make_reversible(build(family, dropout=0.2)).train()
    model.get_input_embeddings().weight.requires_grad_(False)
    loss, got = gradients(model, [batch()], plain=False)
    plain_loss, want = gradients(model, [batch()], plain=True)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert_same_gradients(model, got, want, FP32_RTOL)
    layers = reversible_runtime(model).report.container
    assert any(name.startswith(layers) for name in got)
    other_seed_loss, _ = gradients(model, [batch()], plain=False, seed=2)
    assert other_seed_loss != pytest.approx(loss, rel=1e-6), "dropout is active: another seed draws other masks"


LAST_MLP = "gpt_neox.layers.1.mlp.dense_4h_to_h.weight"


def test_gradient_accumulation_matches_plain():
    model = make_reversible(build("neox-parallel", dropout=0.1)).train()
    batches = [batch(0), batch(1)]
    _, got = gradients(model, batches, plain=False)
    _, want = gradients(model, batches, plain=True)
    _, single = gradients(model, batches[:1], plain=False)
    assert_same_gradients(model, got, want, FP32_RTOL)
    assert not torch.allclose(got[LAST_MLP], single[LAST_MLP]), "the second backward accumulated"


def test_autograd_grad_matches_plain():
    model = make_reversible(build("gpt2"))  # the config's dropout (0.1): the same seed draws the same masks
    params = [p for p in model.parameters() if p.requires_grad]
    ids = batch()
    torch.manual_seed(1)
    got = torch.autograd.grad(model(ids, labels=ids).loss, params)
    torch.manual_seed(1)
    with plain_autograd(model):
        want = torch.autograd.grad(model(ids, labels=ids).loss, params)
    for g, w in zip(got, want):
        assert float((g - w).norm() / w.norm().clamp_min(1e-12)) <= FP32_RTOL
    assert all(p.grad is None for p in params), "autograd.grad leaves .grad alone"


def test_bf16_autocast_matches_plain_within_tolerance():
    model = make_reversible(build("llama", layers=3))
    loss, got = gradients(model, [batch()], plain=False, autocast=True)
    plain_loss, want = gradients(model, [batch()], plain=True, autocast=True)
    assert loss == pytest.approx(plain_loss, rel=1e-6), "forward is the same computation"
    assert_same_gradients(model, got, want, BF16_RTOL)


@pytest.mark.parametrize("family", ["neox-sequential", "gpt2", "llama", "opt"])
def test_one_sequential_layer_converts_exactly(family):
    """For one pre-norm layer, y1 + y2 - h0 = h + F(h) + G(h + F(h)): the original layer."""
    report = reversible_runtime(make_reversible(build(family, layers=1))).report
    assert report.kinds == ("sequential",)
    assert report.function_gap < 1e-6


def test_parallel_residual_changes_the_function_and_reports_it():
    report = reversible_runtime(make_reversible(build("neox-parallel", layers=1))).report
    assert report.kinds == ("parallel",)
    assert report.function_gap > 1e-3
    f, g = report.layers[0].f, report.layers[0].g
    assert [s.path.rsplit(".", 1)[1] for s in f] == ["post_attention_layernorm", "mlp", "post_mlp_dropout"]
    assert [s.path.rsplit(".", 1)[1] for s in g] == ["input_layernorm", "attention", "post_attention_dropout"]
    assert "position_embeddings" in g[1].keywords


@pytest.mark.parametrize("family", FAMILIES)
def test_no_grad_inference_matches_graph_building_forward(family):
    model = make_reversible(build(family, layers=3)).eval()
    ids = batch()
    with torch.no_grad():
        inferred = model(ids).logits
    reversible = model(ids).logits
    with plain_autograd(model):
        plain = model(ids).logits
    torch.testing.assert_close(inferred, reversible.detach(), rtol=0, atol=0)
    torch.testing.assert_close(inferred, plain.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt"])
def test_generate_with_kv_cache_matches_without(family):
    model = make_reversible(build(family)).eval()
    prompt = batch(size=(1, 5))
    cached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_copy_keeps_state_dict_and_leaves_the_original_alone():
    original = build("neox-sequential", layers=3).eval()
    ids = batch()
    with torch.no_grad():
        before = original(ids).logits
    converted = make_reversible(original)
    assert list(converted.state_dict()) == list(original.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(original(ids).logits, before, rtol=0, atol=0)
    assert not hasattr(original, "bwsk_reversible")
    assert all(a is not b for a, b in zip(original.parameters(), converted.parameters()))


def test_inplace_converts_the_model_itself():
    model = build("gpt2")
    assert make_reversible(model, inplace=True) is model
    with pytest.raises(ConversionError, match="already reversible"):
        make_reversible(model)


class BatchNormGelu(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(width)

    def forward(self, x):
        return torch.nn.functional.gelu(self.norm(x.transpose(1, 2)).transpose(1, 2))


def test_stateful_layer_in_a_half_is_refused():
    model = build("neox-sequential")
    model.gpt_neox.layers[1].mlp.act = BatchNormGelu(64)
    with pytest.raises(ConversionError) as error:
        make_reversible(model)
    message = str(error.value)
    assert "\n" not in message
    assert "gpt_neox.layers.1.mlp.act.norm (BatchNorm1d)" in message and "running statistics" in message


def test_unknown_kernels_are_refused():
    with pytest.raises(ConversionError, match="one of"):
        make_reversible(build("gpt2"), kernels="cuda")


@pytest.mark.interpreter
@pytest.mark.parametrize("family", ["llama", pytest.param("neox-parallel", marks=pytest.mark.sweep)])  # RMSNorm; LayerNorm below
def test_a_training_step_with_triton_seams_equals_the_torch_step(family):
    """Under TRITON_INTERPRET=1 on CPU (tests/conftest.py): loss, every gradient and the optimizer's update agree.

    The Triton seams compute every half's leading norm (4 per 2-layer model); the torch seams leave them to the modules.
    """
    ids = batch(size=(2, 9))
    results = {}
    for kernels in ("torch", "triton"):
        model = make_reversible(build(family, dropout=0.1), kernels=kernels).train()
        assert reversible_runtime(model).fused_norms == (4 if kernels == "triton" else 0)
        # SGD with momentum, not AdamW: AdamW's first step is lr * g / (|g| + eps), which turns the rounding-level
        # differences of gradient entries near eps (a key bias is zero in exact arithmetic) into O(lr) weight changes;
        # a step linear in g compares the kernels, not that conditioning
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
        loss, grads = gradients(model, [ids], plain=False)
        optimizer.step()
        results[kernels] = loss, grads, {n: p.detach().clone() for n, p in model.named_parameters()}
    (loss_t, grads_t, weights_t), (loss_k, grads_k, weights_k) = results["torch"], results["triton"]
    assert loss_k == pytest.approx(loss_t, rel=FP32_RTOL)
    assert_same_gradients(model, grads_k, grads_t, FP32_RTOL)
    for name, want in weights_t.items():
        torch.testing.assert_close(weights_k[name], want, rtol=FP32_RTOL, atol=1e-7, msg=name)


@pytest.mark.interpreter
@pytest.mark.parametrize("family", ["neox-sequential", pytest.param("gpt2", marks=pytest.mark.sweep)])  # LayerNorm; RMSNorm above
def test_triton_seams_with_fused_norms_equal_plain_autograd(family):
    """The fused forward, rebuild and norm backward against ordinary autograd through the same fused seams (dropout on,
    frozen embeddings); under no_grad the logits equal the torch seams' (halves running their own norm modules)."""
    model = make_reversible(build(family, dropout=0.2), kernels="triton").train()
    assert reversible_runtime(model).fused_norms == 4
    model.get_input_embeddings().weight.requires_grad_(False)
    loss, got = gradients(model, [batch(size=(2, 7))], plain=False)
    plain_loss, want = gradients(model, [batch(size=(2, 7))], plain=True)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert_same_gradients(model, got, want, FP32_RTOL)
    eager = make_reversible(build(family), kernels="torch").eval()
    ids = batch(size=(1, 6))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids).logits, eager(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the interpreter computes bf16 wrongly)")
@pytest.mark.parametrize("family", ["neox-parallel", "llama"])
def test_triton_seams_under_bf16_autocast_on_cuda(family):
    """bf16 branches into fp32 streams on the GPU: every gradient within bf16 rounding of the torch seams' step."""
    ids = batch(size=(2, 33)).cuda()
    results = {}
    for kernels in ("torch", "triton"):
        model = make_reversible(build(family, dropout=0.1, hidden=96).cuda(), kernels=kernels).train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with torch.autocast("cuda", torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        results[kernels] = loss.item(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    (loss_t, grads_t), (loss_k, grads_k) = results["torch"], results["triton"]
    assert loss_k == pytest.approx(loss_t, rel=2e-2)
    assert_same_gradients(model, grads_k, grads_t, 5e-2)


def test_second_backward_through_the_same_graph_is_an_error():
    model = make_reversible(build("llama"))
    ids = batch()
    loss = model(ids, labels=ids).loss
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_drift_monitor_reports_every_block():
    model = make_reversible(build("neox-parallel", layers=4), drift=DriftMonitor(every=2))
    runtime = reversible_runtime(model)
    for step in range(3):
        ids = batch(step)
        model(ids, labels=ids).loss.backward()
        report = runtime.last_drift
        assert report is not None and report.step == 2 * (step // 2)
    assert sorted(report.errors) == [0, 1, 2, 3]
    assert 0 <= report.max_error < 1e-5


def activation_bytes_after_forward(model, ids, *, plain: bool) -> int:
    """Bytes MemTracker files as activations while the graph of one forward (with loss) is alive (without MemTracker's
    per-module peaks, most of its cost at depth: tests/training/modes/test_fake_step.py checks it against MemTracker)."""
    tracker = PeakTracker()
    tracker.track_external(model)
    with tracker, plain_autograd(model) if plain else nullcontext():
        loss = model(ids, labels=ids).loss
        held = tracker.get_tracker_snapshot("current")[ids.device]["Activation"]
    del loss
    return held


def test_activation_memory_is_flat_in_depth():
    ids = batch(size=(2, 16))
    reversible, plain = {}, {}
    for layers in (6, 24):
        model = make_reversible(build("neox-parallel", layers=layers), inplace=True, measure_gap=False)
        reversible[layers] = activation_bytes_after_forward(model, ids, plain=False)
        plain[layers] = activation_bytes_after_forward(model, ids, plain=True)
    assert reversible[24] <= 1.1 * reversible[6]
    assert plain[24] >= 3 * plain[6]
    assert reversible[24] < plain[6]


def test_one_architecture_is_exported_once_per_process(monkeypatch):
    """Discovery exports a one-layer twin; a second model of the same class and config (any depth) reuses its
    couplings, another config is exported again, and each finds the same halves as a fresh export would."""
    import bwsk
    from bwsk.training.reversible import discover as discovery

    exports = []
    lower = bwsk.lower_module
    monkeypatch.setattr(bwsk, "lower_module", lambda *args, **kwargs: (exports.append(args[0]), lower(*args, **kwargs))[1])

    def layout(layers: int, hidden: int) -> list[tuple]:
        _, halves = discovery.discover(build("neox-sequential", layers=layers, hidden=hidden))
        return [(h.layer, h.kind, repr(h.f), repr(h.g), h.outputs) for h in halves]

    cached = [layout(2, 48), layout(3, 48), layout(2, 40)]
    assert len(exports) == 2  # hidden 48 once (at 2 and at 3 layers), hidden 40 once
    assert [entry[0] for entry in cached[1]] == ["gpt_neox.layers.0", "gpt_neox.layers.1", "gpt_neox.layers.2"]
    monkeypatch.setattr(discovery, "_ONE_LAYER_COUPLINGS", {})
    fresh = []
    for layers, hidden in ((2, 48), (3, 48), (2, 40)):
        discovery._ONE_LAYER_COUPLINGS.clear()
        fresh.append(layout(layers, hidden))
    assert fresh == cached and len(exports) == 5  # without the cache: one export each
