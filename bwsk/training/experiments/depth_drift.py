"""Drift at depth, measured: how far a reversible stack's gradients are from plain autograd, and what keeping them close costs.

`measure_depth(model, ids, ...)` converts `model` once with `make_reversible`'s defaults and
measures one training step of each `VARIANTS` stack on the same weights and input:

- "fp32 streams": the earlier defaults (fp32 streams, one segment, no drift control);
- "fp32 streams + anchors": the same streams with drift control placing anchors and recompute by
  measurement within the memory cap, at conversion (`ReversibleStack.calibrate`) and over the
  first steps (see `variant`);
- "defaults": float64 streams, calibrated, the default drift monitor (what users get).

Per variant and precision: the global relative gradient error against plain autograd on the same
converted model and streams (`plain_autograd`), the rebuild error of every block (all rows), the
stack's activation bytes (MemTracker: what the last layer's call, which runs the stack, leaves
allocated while the graph lives, minus its output) beside two fp32 stream pairs (the memory
reference of issue 15's cap: at most 3x), the stored pairs drift control added and their bytes,
the blocks it recomputes, and the step time. `train(...)` then runs training steps under the
defaults so the same can be measured on trained weights.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from bwsk.training.experiments.demo_data import DEMO_TEXT
from bwsk.training.language_model import autocast, lm_loss, logits_of
from bwsk.training.modes.compare import DTYPES
from bwsk.training.modes.peak_tracker import PeakTracker
from bwsk.training.reversible.convert import make_reversible, plain_autograd, reversible_runtime
from bwsk.training.reversible.discover import example_ids
from bwsk.training.reversible.drift import DriftMonitor, Segment
from bwsk.training.reversible.stack import ReversibleStack
from bwsk.training.trainer.config import learning_rate

VARIANTS = ("fp32 streams", "fp32 streams + anchors", "defaults")
ACTIVATIONS = "Activation"
FP32_BYTES = 4
SETTLE_STEPS = 3


@dataclass
class DepthRecord:
    """One variant of one stack at one precision and one state of its weights (see the module docstring)."""

    model: str
    layers: int
    hidden: int
    batch: int
    seq: int
    dtype: str
    state: str  # "random init" or "trained N steps"
    variant: str
    streams: str
    grad_error: float  # |g - g_plain| / |g_plain| over every parameter together
    drift: list[float]  # rebuild error of each block's input pair, block 0 first
    stack_activation_bytes: int
    two_pairs_bytes: int  # two fp32 stream pairs: the reference of the memory cap
    anchors: int
    anchor_bytes: int
    recomputed_blocks: int
    step_seconds: float

    @property
    def memory_ratio(self) -> float:
        return self.stack_activation_bytes / self.two_pairs_bytes

    def to_json(self) -> dict:
        return {**asdict(self), "memory_ratio": self.memory_ratio}


def global_relative_error(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    """|got - want| / |want| over all tensors together (fp64); inf when they name different parameters."""
    if set(got) != set(want):
        return float("inf")
    difference = sum(float((got[k].double() - want[k].double()).square().sum()) for k in want)
    norm = sum(float(want[k].double().square().sum()) for k in want)
    return (difference / norm) ** 0.5 if norm else difference**0.5


def text_batches(batch: int, seq: int, vocab: int) -> Iterator[torch.Tensor]:
    """Endless (batch, seq) windows of the demo text as bytes (ids below `vocab`), in order, wrapping around."""
    data = torch.tensor(list(DEMO_TEXT.encode()), dtype=torch.long) % vocab
    start = 0
    while True:
        rows = []
        for _ in range(batch):
            rows.append(data[torch.arange(start, start + seq) % len(data)])
            start += seq
        yield torch.stack(rows)


def converted(model: nn.Module) -> nn.Module:
    """`model` itself converted with the defaults (the seams `make_reversible` picks for its device)."""
    return make_reversible(model, inplace=True, measure_gap=False)


def train(model: nn.Module, steps: int, *, batch: int, seq: int, dtype: torch.dtype | None, lr: float = 3e-4) -> list[float]:
    """`steps` AdamW steps of a converted model in the reversible mode with its defaults (warmup 10%, cosine); the losses."""
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01, foreach=False)  # no full-size temporaries
    batches = text_batches(batch, seq, model.config.vocab_size)
    losses = []
    warmup = max(1, steps // 10)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, lr=lr, warmup_steps=warmup, total_steps=steps)
        ids = next(batches).to(device)
        with autocast(device, dtype):
            loss = lm_loss(logits_of(model(ids)), ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


@contextmanager
def variant(stack: ReversibleStack, name: str, model: nn.Module, step: Callable[[], object]) -> Iterator[None]:
    """The stack set up as variant `name` within the block; its own set-up restored after.

    "fp32 streams + anchors" is calibrated as a conversion does, then runs `SETTLE_STEPS` calls of `step` with the
    drift monitor measuring every step (a sampled report over the tolerance, the complete one it calls for, the re-plan),
    as the first steps of a run would.
    """
    saved = (stack.streams, stack.segments, stack.monitor, stack.plan)
    try:
        if name != "defaults":
            stack.streams, stack.segments, stack.plan, stack.monitor = torch.float32, [Segment(0, len(stack.blocks))], None, None
            if name.endswith("anchors"):
                device = next(model.parameters()).device
                stack.monitor = DriftMonitor(every=1)
                stack.calibrate(lambda: logits_of(model(example_ids(model, device))))
                for _ in range(SETTLE_STEPS):
                    step()
                stack.monitor = DriftMonitor()
        yield
    finally:
        stack.streams, stack.segments, stack.monitor, stack.plan = saved


def measure_depth(model: nn.Module, ids: torch.Tensor, *, dtypes: Sequence[str], state: str, name: str, seed: int = 0) -> list[DepthRecord]:
    """One record per variant and precision (`dtypes`: "fp32", "bf16") on the converted `model` (see the module docstring)."""
    stack = reversible_runtime(model).stack
    width = model.config.hidden_size
    records = []
    for dtype_name in dtypes:
        precision = DTYPES[dtype_name]
        references: dict[torch.dtype, dict[str, torch.Tensor]] = {}
        for variant_name in VARIANTS:
            with variant(stack, variant_name, model, functools.partial(step_gradients, model, ids, precision, seed)):
                streams = stack.streams
                if streams not in references:
                    references.clear()  # variants of one streams dtype are adjacent: one reference in memory at a time
                    with plain_autograd(model):
                        references[streams] = step_gradients(model, ids, precision, seed)[0]
                held = stack_activation_bytes(model, ids, precision)
                measured = DriftMonitor(every=1, blocks="all", tolerance=None, rows=None)
                kept, stack.monitor = stack.monitor, measured
                try:
                    grads, seconds = step_gradients(model, ids, precision, seed)
                finally:
                    stack.monitor = kept
                report, cost = measured.last, stack.cost()
                records.append(
                    DepthRecord(
                        name,
                        len(stack.blocks),
                        width,
                        ids.shape[0],
                        ids.shape[1],
                        dtype_name,
                        state,
                        variant_name,
                        str(streams).removeprefix("torch."),
                        global_relative_error(grads, references[streams]),
                        [report.errors.get(b, 0.0) for b in range(len(stack.blocks))] if report else [],
                        held,
                        2 * 2 * ids.numel() * width * FP32_BYTES,
                        cost["anchors"],
                        cost["anchor_bytes"],
                        cost["recomputed_blocks"],
                        seconds,
                    )
                )
                del grads
    return records


def step_gradients(model: nn.Module, ids: torch.Tensor, precision: torch.dtype | None, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    """(gradients of the next-token loss by parameter name, seconds of the step); dropout drawn from `seed`, `.grad` untouched."""
    parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    torch.manual_seed(seed)
    start = time.perf_counter()
    with autocast(ids.device, precision):
        loss = lm_loss(logits_of(model(ids)), ids)
    grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
    seconds = time.perf_counter() - start
    return {n: g.detach() for n, g in zip(parameters, grads) if g is not None}, seconds


def stack_activation_bytes(model: nn.Module, ids: torch.Tensor, precision: torch.dtype | None) -> int:
    """Bytes the stack leaves allocated while its graph lives (MemTracker, activations), its output's excluded.

    The last layer's call runs the whole stack; its activation bytes after the call minus before it,
    minus the hidden state it returns (any layer returns one), is what the stack holds for backward.
    Autocast's cache of low-precision weight copies (freed when autocast exits, before backward) is off.
    Frozen parameters require grad during the measurement (MemTracker hooks every parameter's gradient);
    what the stack saves does not depend on it.
    """
    frozen = [p for p in model.parameters() if not p.requires_grad]
    tracker = PeakTracker()
    tracker.track_external(model, ids)
    before: list[int] = []
    held: list[int] = []
    last = _last_layer(model)
    handles = [
        last.register_forward_pre_hook(lambda *_: before.append(tracker.categories("current").get(ACTIVATIONS, 0))),
        last.register_forward_hook(
            lambda _m, _a, out: held.append(tracker.categories("current").get(ACTIVATIONS, 0) - before[-1] - _bytes(out))
        ),
    ]
    try:
        for parameter in frozen:
            parameter.requires_grad_(True)
        with tracker, torch.autocast(ids.device.type, dtype=precision, enabled=precision is not None, cache_enabled=False):
            logits = logits_of(model(ids))
        del logits
    finally:
        for handle in handles:
            handle.remove()
        for parameter in frozen:
            parameter.requires_grad_(False)
    return held[-1]


def _bytes(output: object) -> int:
    tensor = output[0] if isinstance(output, tuple) else output
    return tensor.untyped_storage().nbytes() if isinstance(tensor, torch.Tensor) else 0


def _last_layer(model: nn.Module) -> nn.Module:
    """The container's last layer: its call runs the whole stack."""
    report = reversible_runtime(model).report
    return model.get_submodule(report.container)[-1]
