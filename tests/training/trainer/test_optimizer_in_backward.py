"""Optimizer step in backward: the ordinary loop's weights in every mode, gradients freed as they are used, a step's
peak lower by about the gradients' bytes, one-line refusals, checkpoints that resume exactly."""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
from cli.train_runs import one_line_error
from safetensors.torch import load_file
from training.tiny_models import tiny_model
from training.tiny_text import tiny_text, tiny_tokenizer, write_corpus

from bwsk.errors import BwskError
from bwsk.training.modes import MODES
from bwsk.training.modes.apply import apply_mode
from bwsk.training.modes.peak_tracker import PeakTracker
from bwsk.training.reversible.convert import reversible_runtime
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import load_text_splits, tokenize_splits
from bwsk.training.trainer.optimizer import OptimizerStep, adamw
from bwsk.training.trainer.optimizer_in_backward import OptimizerInBackward
from bwsk.training.trainer.run import train
from bwsk.training.trainer.run_folder import read_metrics, without_timing

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out

CPU = torch.device("cpu")
STEPS = 5  # two of linear warmup, then the cosine
ADAMW = dict(lr=3e-3, warmup_steps=2, weight_decay=0.1, betas=(0.8, 0.95), adam_eps=1e-6)
FAST = dict(precision="fp32", device="cpu", batch_size=2, seq_len=32, lr=3e-3, eval_batch_size=16)


def _batches(steps: int, shape: tuple[int, int], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128, shape, generator=generator) for _ in range(steps)]


def _update(model, mode: str, in_backward: bool, steps: int = STEPS) -> OptimizerStep:
    config = TrainConfig(mode=mode, precision="fp32", device="cpu", grad_clip=0.0, optimizer_in_backward=in_backward, **ADAMW)
    return OptimizerStep(model, config, planned_steps=steps, device=CPU, info=None)


def _trained(mode: str, in_backward: bool, batches: list[torch.Tensor]):
    """A tiny GPT-NeoX (dropout on) in `mode` after one step per batch; (model, update, [(lr, loss, grad norm)], initial weights)."""
    model = apply_mode(tiny_model("neox-sequential", dropout=0.1, seed=3), mode, example_input=(batches[0],), kernels="torch")
    initial = [p.detach().clone() for p in model.parameters()]
    update = _update(model, mode, in_backward, len(batches))
    torch.manual_seed(11)  # the same dropout masks in both loops
    records = []
    for step, ids in enumerate(batches):
        lr = update.set_learning_rate(step)
        records.append((lr, *update(ids, step + 1, lr)))
        if in_backward:
            assert all(p.grad is None for p in model.parameters())  # every gradient freed inside the backward
    return model, update, records, initial


@pytest.mark.parametrize("mode", MODES)
def test_weights_moments_losses_and_norms_equal_the_ordinary_loop(mode):
    batches = _batches(STEPS, (2, 16), seed=torch.randint(0, 2**31, ()).item())
    ordinary, ordinary_update, expected, initial = _trained(mode, False, batches)
    stepped, stepped_update, got, _ = _trained(mode, True, batches)
    assert len({lr for lr, _, _ in expected}) == STEPS - 1  # warmup, then the cosine from the peak: the peak twice
    for (lr, loss, norm), (lr_got, loss_got, norm_got) in zip(expected, got):
        assert lr_got == lr and loss_got == pytest.approx(loss, rel=1e-6) and norm_got == pytest.approx(norm, rel=1e-6)
    assert all(not torch.equal(p, q) for p, q in zip(ordinary.parameters(), initial))  # trained weights are compared
    for (name, p), q in zip(ordinary.named_parameters(), stepped.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-6, msg=name)
    saved, saved_got = ordinary_update.optimizer.state_dict(), stepped_update.optimizer.state_dict()
    assert saved["param_groups"] == saved_got["param_groups"] and saved["state"].keys() == saved_got["state"].keys()
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            torch.testing.assert_close(saved_got["state"][index][key], value, rtol=1e-6, atol=1e-6)


def test_reversible_blocks_are_stepped_one_by_one_during_the_rebuild():
    """Each block's parameters are stepped after its halves are rebuilt and before the previous block's are; without
    `step_scope` (gradients returned by the segment's Function) they all wait for the whole rebuild."""
    ids = _batches(1, (2, 16), seed=5)[0]
    model = apply_mode(tiny_model("neox-sequential", layers=3), "reversible", example_input=(ids,), kernels="torch")
    blocks = reversible_runtime(model).stack.blocks
    owner = {id(p): block.index for block in blocks for p in block.parameters()}
    in_backward = OptimizerInBackward(model, adamw(model, TrainConfig(**FAST)))
    events: list[tuple[str, int]] = []
    for block in blocks:
        for half in (block.f, block.g):
            half.modules[0].register_forward_pre_hook(lambda module, args, k=block.index: events.append(("rebuild", k)))
    step = in_backward._step

    def recorded_step(parameter: torch.Tensor) -> None:
        if id(parameter) in owner and parameter.grad is not None:
            events.append(("step", owner[id(parameter)]))
        step(parameter)

    in_backward._step = recorded_step

    def order(scoped: bool) -> list[tuple[str, int]]:
        events.clear()
        with in_backward.step_scope() if scoped else contextlib.nullcontext():
            loss = model(ids).logits.float().square().mean()
            del events[:]  # the forward's calls
            in_backward.backward(loss)
        return list(events)

    during = order(scoped=True)
    assert sum(kind == "step" for kind, _ in during) == len(owner)
    for k in range(1, len(blocks)):
        last_step = max(i for i, event in enumerate(during) if event == ("step", k))
        assert last_step < min(i for i, event in enumerate(during) if event == ("rebuild", k - 1)), during
    after = order(scoped=False)
    last_rebuild = max(i for i, (kind, _) in enumerate(after) if kind == "rebuild")
    assert min(i for i, (kind, _) in enumerate(after) if kind == "step") > last_rebuild
    assert all(p.grad is None for p in model.parameters()) and not reversible_runtime(model).stack.grads_into_leaves


def _step_peak(model, update: OptimizerStep, ids: torch.Tensor, step: int) -> tuple[int, dict]:
    """MemTracker's peak (bytes, and by category) over training step `step` (0-based); the tracker skips MemTracker's
    per-module peaks, most of its cost (tests/training/modes/test_fake_step.py checks it against MemTracker)."""
    tracker = PeakTracker()
    tracker.track_external(model, update.optimizer)
    lr = update.set_learning_rate(step)
    with tracker:
        update(ids, step + 1, lr)
    peak = tracker.get_tracker_snapshot("peak")
    by_category = {str(getattr(kind, "value", kind)): int(size) for categories in peak.values() for kind, size in categories.items()}
    return by_category["Total"], by_category


@pytest.mark.parametrize("mode", ["conventional", "checkpoint", "reversible"])
def test_a_steps_peak_falls_by_about_the_gradients_bytes(mode):
    """Batch 1 x 8 on 8 layers of width 128: gradients (4.6 MiB, as many bytes as the parameters) dwarf activations.

    Measured (second step, moments already made): the peak falls by 88% of the gradients' bytes in the conventional mode
    (the backward's activations still live when the last gradients arrive), 97% with reversible blocks, 98% with
    checkpointing; at most one parameter's gradient is alive at the peak."""
    batches = _batches(2, (1, 8), seed=7)
    peaks = {}
    for in_backward in (False, True):
        model = apply_mode(tiny_model("llama", layers=8, hidden=128), mode, example_input=(batches[0],), kernels="torch")
        update = _update(model, mode, in_backward, steps=2)
        update(batches[0], 1, update.set_learning_rate(0))
        peaks[in_backward] = _step_peak(model, update, batches[1], 1)
    gradient_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    largest = max(p.numel() * p.element_size() for p in model.parameters())
    saving = peaks[False][0] - peaks[True][0]
    assert peaks[False][1]["Gradient"] == gradient_bytes and peaks[True][1]["Gradient"] <= largest
    assert 0.85 * gradient_bytes < saving <= gradient_bytes, (saving, gradient_bytes)


class _AccumulatesItself(torch.autograd.Function):
    """x * weight whose backward puts weight's gradient into `.grad` itself (as a reversible rebuild does)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return x * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        torch.autograd.backward(weight, grad * x)
        return (grad * weight).sum(0), None


def test_a_gradient_arriving_in_two_parts_is_refused_in_one_line_not_stepped_twice():
    model = torch.nn.Linear(3, 3, bias=False)
    in_backward = OptimizerInBackward(model, torch.optim.AdamW(model.parameters()))
    x = torch.randn(3)
    loss = (_AccumulatesItself.apply(x, model.weight) + model.weight).sum()  # a second part from the direct use
    with pytest.raises(BwskError, match=r"parameter weight received its gradient in two parts") as refused:
        in_backward.backward(loss)
    assert "\n" not in str(refused.value)
    model.weight.grad = None
    model(x).sum().backward()  # the hooks are gone: an ordinary backward accumulates
    assert model.weight.grad is not None


@pytest.mark.parametrize(
    "settings, flag",
    [({}, "--grad-clip 0"), (dict(grad_clip=0.0, precision="fp16"), "--precision fp16"), (dict(grad_clip=0.0, distributed="ddp"), "ddp")],
)
def test_what_needs_every_gradient_at_once_is_refused_in_one_line(settings, flag):
    with pytest.raises(BwskError, match="--optimizer-in-backward") as refused:
        TrainConfig(optimizer_in_backward=True, **settings)
    assert flag in str(refused.value) and "\n" not in str(refused.value)


def test_the_cli_flag_teaches_the_clipping_it_needs(tmp_path, capsys):
    text, tokenizer = write_corpus(tmp_path, lines=40)
    argv = ["pythia-70m", "--tiny", "--layers", "1", "--data", text, "--tokenizer", tokenizer, "--out", tmp_path / "r"]
    assert "--grad-clip 0" in one_line_error([*argv, "--optimizer-in-backward"], capsys)


@functools.cache
def _corpus(root: str):
    from pathlib import Path

    text = tiny_text(120)
    path = Path(root) / "corpus.txt"
    path.write_text(text)
    return tokenize_splits(load_text_splits(path, "80/10/10"), tiny_tokenizer(text))


@pytest.fixture
def splits(tmp_path_factory):
    return _corpus(str(tmp_path_factory.getbasetemp()))


def test_a_training_run_ends_with_the_ordinary_runs_weights_and_a_lower_peak(splits, tmp_path):
    results = {}
    for in_backward in (False, True):
        config = TrainConfig(max_steps=5, eval_every=5, grad_clip=0.0, optimizer_in_backward=in_backward, **FAST)
        folder = tmp_path / str(in_backward)
        results[in_backward] = (train(tiny_model("neox-parallel"), splits, config, folder, pretrained=False, progress=False), folder)
    (ordinary, ordinary_folder), (stepped, stepped_folder) = results[False], results[True]
    expected, got = load_file(ordinary_folder / "model.safetensors"), load_file(stepped_folder / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-6, msg=name)
    records = [[r for r in read_metrics(folder / "metrics.jsonl") if "loss" in r] for folder in (ordinary_folder, stepped_folder)]
    for before, after in zip(*records):
        assert after["loss"] == pytest.approx(before["loss"], rel=1e-6) and after["grad_norm"] == pytest.approx(
            before["grad_norm"], rel=1e-6
        )
    assert stepped.test_perplexity == pytest.approx(ordinary.test_perplexity, rel=1e-5)
    assert stepped.peak_memory_bytes < ordinary.peak_memory_bytes  # MemTracker over the first step


def test_a_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run(splits, tmp_path):
    config = TrainConfig(
        mode="reversible", max_steps=6, eval_every=3, checkpoint_every=2, grad_clip=0.0, optimizer_in_backward=True, **FAST
    )
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    train(tiny_model("neox-sequential", seed=1), splits, config, straight, pretrained=False, progress=False)

    def crash_at_step_5(record: dict) -> None:
        if record.get("step") == 5 and "loss" in record:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(tiny_model("neox-sequential", seed=1), splits, config, broken, pretrained=False, progress=False, observer=crash_at_step_5)
    resumed_from = []
    train(
        tiny_model("neox-sequential", seed=9), splits, config, broken, pretrained=False, progress=False, resume=True,
        observer=lambda record: resumed_from.append(record["step"]),
    )  # fmt: skip
    assert resumed_from[0] == 5  # the last checkpoint was step 4's: its moments were loaded, not rebuilt
    expected, got = load_file(straight / "model.safetensors"), load_file(broken / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert [without_timing(r) for r in read_metrics(broken / "metrics.jsonl")] == [
        without_timing(r) for r in read_metrics(straight / "metrics.jsonl")
    ]
