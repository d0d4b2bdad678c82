"""The training modes: checkpoint and analyzed compute the same function as conventional, the reversible mode takes the
seams asked for, and misuse is refused."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from training.gradient_check import FP32_RTOL, assert_same_gradients, batch, gradients
from training.tiny_models import FAMILIES, tiny_model

from bwsk.errors import BwskError
from bwsk.frontend.zoo import build, model_inputs
from bwsk.training.blocks import block_paths
from bwsk.training.language_model import lm_loss, logits_of
from bwsk.training.modes import MODES
from bwsk.training.modes.apply import PLANNING_SEQ, applied_mode, apply_mode, planning_input, seam_kernels
from bwsk.training.modes.measure import loss_gradients
from bwsk.training.modes.recording import record_blocks
from bwsk.training.modes.selective import Planner, plan_selective
from bwsk.training.reversible.convert import make_reversible

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out

FP32 = dict(rtol=1e-5, atol=1e-6)


@functools.cache
def tiny(name: str, layers: int = 2, seq: int = 16):
    model = build(name, tiny=True, layers=layers, device="cpu", seed=3)
    (ids,) = model_inputs(model, batch=2, seq=seq, seed=5)
    return model, ids


@pytest.mark.parametrize("name", ["pythia-70m", "gpt2", "smollm-135m"])
@pytest.mark.parametrize("mode,budget", [("checkpoint", 0.5), ("analyzed", 0.2), ("analyzed", 0.5), ("analyzed", 1.0)])
def test_recomputing_modes_give_conventional_loss_and_every_gradient(name, mode, budget):
    model, ids = tiny(name)
    expected_loss = lm_loss(logits_of(model(ids)), ids)
    expected = loss_gradients(model, ids)
    applied = apply_mode(copy.deepcopy(model), mode, example_input=(ids,), budget=budget)
    torch.testing.assert_close(lm_loss(logits_of(applied(ids)), ids), expected_loss, **FP32)
    got = loss_gradients(applied, ids)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], **FP32, msg=key)
    plan = applied_mode(applied).plan
    if mode == "analyzed":  # every operator the blocks dispatched was found in the plan
        assert plan.alignment.unmatched == 0 and plan.alignment.matched > 0


def test_the_plan_caches_nothing_past_the_recompute_stop():
    """Backward's recompute stops at a block's last saved output (the MLP's input): the output projection after it never
    runs again, so even the whole budget does not cache it; below the stop the products and attention go first."""
    model, ids = tiny("pythia-70m")
    recorded = record_blocks(model, (ids,))
    planner = Planner(recorded)
    everything = planner.plan(1.0)
    for steps, stop in zip(everything.blocks, recorded.stop):
        assert not any(step.save for step in steps[stop + 1 :])
        assert [str(step.op) for step in steps[stop + 1 :] if step.flops] == ["aten.addmm.default"]  # dense_4h_to_h
    products = [step for step in everything.blocks[0][: recorded.stop[0] + 1] if step.flops]
    assert products and all(step.save for step in products)
    assert everything.recompute_flops == 0 < everything.checkpoint_flops


def test_apply_mode_refuses_misuse():
    model, ids = tiny("pythia-70m")
    with pytest.raises(BwskError, match="unknown training mode"):
        apply_mode(copy.deepcopy(model), "fast")
    with pytest.raises(BwskError, match="budget 1.5: a fraction .* at most 1"):
        apply_mode(copy.deepcopy(model), "analyzed", example_input=(ids,), budget=1.5)
    applied = apply_mode(copy.deepcopy(model), "checkpoint")
    with pytest.raises(BwskError, match="already in mode 'checkpoint'"):
        apply_mode(applied, "analyzed", example_input=(ids,))


def test_block_paths_name_the_stack():
    model, _ = tiny("gpt2", layers=3)
    assert block_paths(model) == ["transformer.h.0", "transformer.h.1", "transformer.h.2"]
    with pytest.raises(BwskError, match="no stack"):
        block_paths(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kernels,fused", [pytest.param("triton", 4, marks=pytest.mark.interpreter), ("torch", 0), ("auto", 0)])
def test_kernels_choose_the_reversible_seams(kernels, fused):
    """Triton seams (run by the CPU interpreter here, tests/conftest.py) compute every half's leading norm: 2 layers x 2 halves."""
    from bwsk.training.reversible.convert import reversible_runtime

    model = tiny_model("neox-parallel")
    ids = torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(0))
    runtime = reversible_runtime(apply_mode(model, "reversible", kernels=kernels))
    assert (runtime.kernels, runtime.fused_norms) == ("torch" if kernels == "auto" else kernels, fused)  # auto: torch off CUDA
    with torch.no_grad():
        plain = make_reversible(tiny_model("neox-parallel"), kernels="torch")(ids).logits
        torch.testing.assert_close(model(ids).logits, plain, **FP32)


@pytest.mark.interpreter
def test_a_reversible_model_takes_the_seams_asked_for_on_its_own_layout():
    """A model converted with torch seams (as a `bwsk_reversible` folder loads) is re-seamed, same weights, same function."""
    from bwsk.training.reversible.convert import reversible_runtime

    converted = make_reversible(tiny_model("llama"), kernels="torch")
    before = reversible_runtime(converted).report
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = converted(ids).logits
    weights = [p.data_ptr() for p in converted.parameters()]
    reseamed = apply_mode(converted, "reversible", kernels="triton")
    after = reversible_runtime(reseamed)
    assert reseamed is converted and [p.data_ptr() for p in reseamed.parameters()] == weights
    assert (after.kernels, after.fused_norms, after.report) == ("triton", 4, before)
    with torch.no_grad():
        torch.testing.assert_close(reseamed(ids).logits, expected, **FP32)


def test_kernels_are_refused_in_one_line_where_they_mean_nothing_or_cannot_run(monkeypatch):
    model, _ = tiny("pythia-70m")
    for mode in ("conventional", "checkpoint"):
        with pytest.raises(BwskError, match=f"reversible mode's seams; the {mode} mode has none"):
            apply_mode(copy.deepcopy(model), mode, kernels="triton")
        assert applied_mode(apply_mode(copy.deepcopy(model), mode, kernels="torch")).mode == mode  # no seams: torch and auto are fine
    with pytest.raises(BwskError, match="unknown kernels 'cuda' \\(expected one of .*triton"):
        apply_mode(copy.deepcopy(model), "reversible", kernels="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BwskError, match="need a CUDA device, and the model is on cpu.*TRITON_INTERPRET=1") as refused:
        apply_mode(copy.deepcopy(model), "reversible", kernels="triton")
    assert "\n" not in str(refused.value)
    assert seam_kernels("auto", "reversible", "cpu") == "torch" and seam_kernels("torch", "analyzed", "cpu") is None


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_a_step_on_every_family_built_with_its_defaults(family, mode):
    """sdpa attention, `use_cache` on, the config's dropout: one step's loss and every gradient equal the reference
    (conventional for checkpoint and analyzed; plain autograd on the converted model for reversible), the optimizer moves
    the weights, and the user's attention and cache settings stay for inference."""
    reference = tiny_model(family)
    assert reference.config._attn_implementation == "sdpa" and reference.config.use_cache
    model = apply_mode(copy.deepcopy(reference), mode)
    ids = batch()
    loss, got = gradients(model, [ids], plain=False)
    if mode == "reversible":
        want_loss, want = gradients(model, [ids], plain=True)
    else:
        want_loss, want = gradients(reference, [ids], plain=False) if mode != "conventional" else (loss, got)
    assert loss == pytest.approx(want_loss, rel=1e-6)
    assert_same_gradients(model, got, want, FP32_RTOL)
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()) if p.grad is not None)
    assert model.config._attn_implementation == "sdpa" and model.config.use_cache
    with torch.no_grad():
        assert model(ids).past_key_values is not None, "inference keeps the KV cache"
    if mode != "conventional":
        assert model(ids).past_key_values is None, "a graph-building forward of a recomputing mode runs without one"


def test_the_analyzed_mode_plans_on_a_default_input():
    model = tiny_model("gpt2")
    (ids,) = planning_input(model)
    assert ids.shape == (2, PLANNING_SEQ) and int(ids.max()) < 128
    plan = applied_mode(apply_mode(model, "analyzed")).plan
    assert plan.predicted_bytes > 0 and plan.alignment.matched == 0  # nothing has run yet


class Blocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_the_analyzed_mode_needs_example_input_for_a_model_without_config():
    with pytest.raises(BwskError, match="needs example_input .* for a Blocks: it has no config"):
        apply_mode(Blocks(), "analyzed")


def test_analyzed_dropout_plan_recomputes_the_masks_it_cannot_cache():
    """Planned on the model in training mode, dropout's mask buffer is written in place (bernoulli_, div_) after it is
    created: selective checkpointing cannot cache it, so the plan recomputes it (same RNG state, same mask)."""
    model = tiny_model("gpt2", dropout=0.3)
    (ids,) = planning_input(model)
    plan = plan_selective(model, (ids,), budget=0.5)
    ops = [step for step in plan.blocks[0]]
    filled = [i for i, step in enumerate(ops) if str(step.op) == "aten.bernoulli_.float"]
    assert filled, "the plan sees the training-mode dropout"
    for i in filled:
        assert not any(step.save for step in ops[i - 1 : i + 2]), "neither the buffer, its fill nor its scaling is cached"
    applied = apply_mode(copy.deepcopy(model), "analyzed", example_input=(ids,))
    _, got = gradients(applied, [ids], plain=False)
    _, want = gradients(model, [ids], plain=False)
    assert_same_gradients(applied, got, want, FP32_RTOL)
