"""The analyzed mode's plan: a byte target from bytes or a fraction of conventional activation memory, predicted bytes
and recompute FLOPs equal to the measured ones, gradients equal to conventional's, the knob monotone, the floor refused
below in one line; on the model as transformers builds it (sdpa attention), under bf16 autocast and with dropout."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
from training.tiny_models import tiny_model

from bwsk.errors import BwskError
from bwsk.render.units import human_bytes
from bwsk.training.choices import DEFAULT_BUDGET
from bwsk.training.language_model import autocast, next_token_loss
from bwsk.training.modes.apply import applied_mode, apply_mode
from bwsk.training.modes.flops import counting_flops
from bwsk.training.modes.measure import activation_bytes, loss_gradients
from bwsk.training.modes.recording import record_blocks
from bwsk.training.modes.selective import Planner

pytestmark = pytest.mark.slow  # whole-model steps: `make test` runs them, `make test-fast` leaves them out

BUDGETS = [0.3, 0.5, 0.8, 1.0, "160KiB", "300KiB", 400 * 1024]


@functools.cache
def tiny(family: str = "neox-sequential", dropout: float = 0.0):
    """A tiny model as transformers builds it from its config (sdpa attention, the cache default), its input, and its
    planner."""
    model = tiny_model(family, layers=3, dropout=dropout, seed=3).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(5))
    return model, ids, Planner(record_blocks(model, (ids,)))


def step_flops(model: torch.nn.Module, ids: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    with counting_flops() as counter:
        with autocast(ids.device, dtype):
            loss = next_token_loss(model, ids, chunked=False)
        loss.backward()
    return counter.get_total_flops()


@functools.cache
def conventional_flops(family: str = "neox-sequential") -> int:
    model, ids, _ = tiny(family)
    return step_flops(copy.deepcopy(model), ids)


@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_the_prediction_is_what_the_step_keeps_and_recomputes(budget):
    model, ids, planner = tiny()
    applied = apply_mode(copy.deepcopy(model), "analyzed", example_input=(ids,), budget=budget)
    made = applied_mode(applied).plan
    conventional = planner.recorded.conventional_bytes
    expected = int(budget * conventional) if isinstance(budget, float) else made.target_bytes
    assert made.target_bytes == expected and made.floor_bytes <= made.predicted_bytes <= made.target_bytes
    assert activation_bytes(applied, ids) == made.predicted_bytes  # MemTracker, to the byte
    assert step_flops(applied, ids) - conventional_flops() == made.recompute_flops  # FlopCounterMode, to the FLOP
    assert made.alignment.unmatched == 0 and made.alignment.matched > 0  # the run followed the plan


def test_conventional_bytes_are_what_conventional_training_keeps():
    model, ids, planner = tiny()
    assert activation_bytes(copy.deepcopy(model), ids) == planner.recorded.conventional_bytes


def test_at_the_floor_the_plan_is_the_checkpoint_mode():
    model, ids, planner = tiny()
    floor = planner.plan(1.0).floor_bytes
    applied = apply_mode(copy.deepcopy(model), "analyzed", example_input=(ids,), budget=floor)
    made = applied_mode(applied).plan
    assert made.predicted_bytes == made.target_bytes == floor and not made.cached()
    checkpointed = apply_mode(copy.deepcopy(model), "checkpoint")
    assert activation_bytes(applied, ids) == activation_bytes(checkpointed, ids) == floor
    assert made.recompute_flops == made.checkpoint_flops == step_flops(checkpointed, ids) - conventional_flops()


@pytest.mark.parametrize("family", ["neox-sequential", "llama"])
@pytest.mark.parametrize("budget", [0.3, 0.7])
def test_gradients_equal_conventional_with_dropout_on(family, budget):
    model, ids, _ = tiny(family, dropout=0.0 if family == "llama" else 0.2)
    torch.manual_seed(11)
    want = loss_gradients(model, ids)
    applied = apply_mode(copy.deepcopy(model), "analyzed", example_input=(ids,), budget=budget)
    torch.manual_seed(11)
    got = loss_gradients(applied, ids)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert applied_mode(applied).plan.alignment.unmatched == 0


def test_dropout_masks_are_never_cached():
    """Dropout fills `empty_like` in place (bernoulli_, then div_): selective checkpointing cannot cache a tensor
    written after it is made, so the plan recomputes the mask (same RNG state, same mask)."""
    _, _, planner = tiny(dropout=0.2)
    plan = planner.plan(1.0)
    written = [(b, i) for b, ops in enumerate(planner.recorded.blocks) for i, op in enumerate(ops) if op.written]
    assert written, "the recording sees the training-mode dropout"
    assert not any(plan.blocks[b][i].save for b, i in written)
    assert plan.written_in_place == len(written) and plan.summary()["written_in_place"] == len(written)


def test_under_bf16_autocast_the_prediction_holds():
    model, ids, _ = tiny()
    applied = apply_mode(copy.deepcopy(model), "analyzed", example_input=(ids,), dtype=torch.bfloat16, budget=0.5)
    made = applied_mode(applied).plan
    assert activation_bytes(applied, ids, dtype=torch.bfloat16) == made.predicted_bytes <= made.target_bytes
    conventional = step_flops(copy.deepcopy(model), ids, torch.bfloat16)
    assert step_flops(applied, ids, torch.bfloat16) - conventional == made.recompute_flops


def test_the_knob_is_monotone():
    """A larger budget caches a superset: never fewer bytes stored, never more FLOPs recomputed."""
    _, _, planner = tiny()
    floor = planner.plan(1.0).floor_bytes
    targets = sorted({floor, *(floor + k * 20_000 for k in range(1, 40)), planner.recorded.conventional_bytes})
    plans = [planner.plan(t) for t in targets]
    for smaller, larger in zip(plans, plans[1:]):
        assert smaller.predicted_bytes <= larger.predicted_bytes and smaller.recompute_flops >= larger.recompute_flops
        cached = lambda plan: {(b, i) for b, steps in enumerate(plan.blocks) for i, s in enumerate(steps) if s.save}  # noqa: E731
        assert cached(smaller) <= cached(larger)
    assert plans[0].recompute_flops > plans[-1].recompute_flops == 0


def test_a_budget_below_the_floor_is_refused_in_one_line():
    model, ids, planner = tiny()
    floor = planner.plan(1.0).floor_bytes
    with pytest.raises(BwskError) as refused:
        apply_mode(copy.deepcopy(model), "analyzed", example_input=(ids,), budget=floor - 1)
    message = str(refused.value)
    assert "\n" not in message and "below its floor" in message and human_bytes(floor) in message
    with pytest.raises(BwskError, match=r"budget 0\.01 of conventional activation memory .* below its floor"):
        planner.plan(0.01)


def test_the_summary_says_what_the_plan_decided():
    model, ids, _ = tiny()
    plan = applied_mode(apply_mode(copy.deepcopy(model), "analyzed", example_input=(ids,))).plan
    summary = json.loads(json.dumps(plan.summary()))
    assert summary["budget"] == DEFAULT_BUDGET and "of conventional activation memory" in summary["budget_means"]
    assert summary["predicted_bytes"] == plan.predicted_bytes and summary["recompute_flops"] == plan.recompute_flops
    assert summary["floor_bytes"] <= summary["predicted_bytes"] <= summary["target_bytes"]
    assert sum(summary["cached_operators"].values()) == sum(step.save for steps in plan.blocks for step in steps) > 0
    recorded = tiny()[2].recorded
    after_stop = sum(op.flops for ops, stop in zip(recorded.blocks, recorded.stop) for op in ops[stop + 1 :])
    assert summary["past_stop_flops"] == after_stop > 0  # each block's MLP output projection: never run again
