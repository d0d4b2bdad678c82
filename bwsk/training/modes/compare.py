"""The training modes side by side on one model: memory, prediction, time and gradients of one real step each.

`compare_modes(model, modes, batch=..., seq=..., kernels=("torch", "triton"))` applies
each mode to its own copy of `model` (same weights), the reversible mode once per seam
arithmetic asked for ("reversible (torch)" beside "reversible (triton)"), and measures, per
variant: the step's peak memory (total and by category), the activation bytes after forward
beside the analysis's prediction, the step time as a ratio to conventional timed in the same
rounds (interleaved), and the largest gradient difference against ordinary autograd on the
same function (the original model; for every reversible variant, the torch-seam conversion
under `plain_autograd`). Conventional is always measured: it is the reference for time and
gradients. Predictions describe fp32 execution; under autocast they are not given.
"""

from __future__ import annotations

import copy
import functools
import gc
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from bwsk.frontend.zoo import model_inputs
from bwsk.training.blocks import block_list
from bwsk.training.modes import DEFAULT_BUDGET, MODES
from bwsk.training.modes.apply import analyze_model, applied_mode, apply_mode, predicted_activation_bytes, seam_kernels
from bwsk.training.modes.measure import activation_bytes, loss_gradients, max_grad_difference, step_memory, step_seconds, train_step

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


@dataclass
class Record:
    """One variant's measurements on one model shape (bytes, seconds; ratios against conventional).

    A variant is a mode and, for `reversible`, the seams' `kernels` ("torch" or "triton"; None for the other modes).
    """

    model: str
    mode: str
    layers: int
    batch: int
    seq: int
    dtype: str
    device: str
    peak_bytes: int
    peak_source: str
    peak_by_category: dict[str, int]
    activation_bytes: int
    predicted_activation_bytes: int | None
    step_seconds: float
    step_time_ratio: float | None = None
    max_grad_difference: float | None = None
    grad_reference: str = "conventional"
    loss: float = 0.0
    budget: int | float | str | None = None  # the analyzed mode's (see `apply_mode`)
    notes: list[str] = field(default_factory=list)
    kernels: str | None = None

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def label(self) -> str:
        """The variant's name in tables and plots: the mode, with the seams of a reversible one ("reversible (triton)")."""
        return self.mode if self.kernels is None else f"{self.mode} ({self.kernels})"

    def to_json(self) -> dict:
        return {**asdict(self), "tokens": self.tokens, "label": self.label}


Variant = tuple[str, str | None]  # (mode, seams)
REVERSIBLE_REFERENCE = "plain autograd on the converted model (torch seams)"


def variants(modes: Sequence[str], kernels: Sequence[str], device: torch.device) -> list[Variant]:
    """(mode, seams) in measuring order: conventional first (the reference), then the modes in `MODES` order,
    reversible once per distinct seams `kernels` resolve to on `device` (BwskError: see `seam_kernels`)."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown training mode(s) {', '.join(unknown)} (expected {', '.join(MODES)})")
    if not kernels:
        raise ValueError("kernels: name at least one of auto, torch, triton")
    measured = [m for m in MODES if m in modes or m == "conventional"]
    # resolved for the last mode measured: reversible when it is, else a mode that refuses "triton"
    seams = dict.fromkeys(seam_kernels(choice, measured[-1], device) for choice in kernels)
    plain = [(mode, None) for mode in measured if mode != "reversible"]
    return plain + ([("reversible", choice) for choice in seams] if "reversible" in measured else [])


def compare_modes(
    model: nn.Module,
    modes: Sequence[str],
    *,
    batch: int,
    seq: int,
    dtype: str = "fp32",
    budget: int | float | str = DEFAULT_BUDGET,
    repeats: int = 3,
    seed: int = 0,
    name: str | None = None,
    kernels: Sequence[str] = ("auto",),
) -> list[Record]:
    """Measure one training step of `model` in each of `modes`; returns a record per variant, conventional first
    (always measured: the reference). `kernels`: the reversible mode's seams, one record each (see `variants`).

    `model` is left untouched (each variant gets a deep copy). Memory and gradients are measured one variant at
    a time, with no other variant's model on the device (a CUDA peak counts the allocator's bytes above what
    was allocated before the variant); then `repeats` timed steps per variant, interleaved across variants,
    after one untimed step each; the median is reported. Every reversible variant's gradients are compared
    with the same reference: the torch-seam conversion under `plain_autograd`.
    """
    precision = DTYPES[dtype]
    device = next(model.parameters()).device
    order = variants(modes, kernels, device)
    (ids,) = model_inputs(model, batch=batch, seq=seq, seed=seed)
    analysis = analyze_model(model, (ids,))
    references = {"conventional": _on_cpu(loss_gradients(model, ids, dtype=precision))}
    if any(mode == "reversible" for mode, _ in order):
        references["reversible"] = _reversible_reference(model, ids, precision)
    layers = len(block_list(model)[1])
    label = name or getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
    records = []
    for mode, seams in order:
        gc.collect()  # a converted or checkpointed copy is a reference cycle (a layer's forward refers to the layer)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        applied = apply_mode(copy.deepcopy(model), mode, example_input=(ids,), dtype=precision, budget=budget, kernels=seams or "auto")
        plan = applied_mode(applied).plan
        reference = references["reversible" if mode == "reversible" else "conventional"]
        difference = max_grad_difference(_on_cpu(loss_gradients(applied, ids, dtype=precision)), reference)
        kept = activation_bytes(applied, ids, dtype=precision)
        predicted = predicted_activation_bytes(analysis, mode, plan) if precision is None else None
        optimizer = torch.optim.AdamW([p for p in applied.parameters() if p.requires_grad], lr=1e-4)
        memory = step_memory(applied, optimizer, ids, dtype=precision)
        peak, source = memory.peak_bytes, memory.source
        if device.type == "cuda":
            peak, source = peak - before, f"{source}, above the bytes allocated before the variant's model"
        del applied, optimizer  # the next variant's peak must not count this one's model and AdamW state
        notes = [f"{plan.alignment.unmatched} operator(s) off the plan (recomputed)"] if plan and plan.alignment.unmatched else []
        records.append(
            Record(
                label,
                mode,
                layers,
                batch,
                seq,
                dtype,
                device.type,
                peak,
                source,
                memory.peak_by_category,
                kept,
                predicted,
                0.0,
                max_grad_difference=difference,
                grad_reference=REVERSIBLE_REFERENCE if mode == "reversible" else "conventional",
                loss=memory.loss,
                budget=budget if mode == "analyzed" else None,
                notes=notes,
                kernels=seams,
            )
        )
    _time_steps(model, order, records, ids, precision, budget, repeats)
    return records


def _time_steps(model, order: list[Variant], records: list[Record], ids, precision, budget: int | float | str, repeats: int) -> None:
    """Fill each record's median step time and its ratio to conventional: every variant on the device at once,
    one untimed step each, then `repeats` rounds, one timed step per variant each round."""
    trained = []
    for mode, seams in order:
        applied = apply_mode(copy.deepcopy(model), mode, example_input=(ids,), dtype=precision, budget=budget, kernels=seams or "auto")
        optimizer = torch.optim.AdamW([p for p in applied.parameters() if p.requires_grad], lr=1e-4)
        train_step(applied, optimizer, ids, precision)
        optimizer.zero_grad(set_to_none=True)
        trained.append((applied, optimizer))
    times: list[list[float]] = [[] for _ in order]
    for _ in range(repeats):
        for (applied, optimizer), seconds in zip(trained, times):
            seconds.append(step_seconds(functools.partial(train_step, applied, optimizer, ids, precision), ids.device))
            optimizer.zero_grad(set_to_none=True)
    baseline = statistics.median(times[0])
    for record, seconds in zip(records, times):
        record.step_seconds = statistics.median(seconds)
        record.step_time_ratio = record.step_seconds / baseline if baseline else None


def _reversible_reference(model: nn.Module, ids: torch.Tensor, precision: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The gradients every reversible variant is checked against: ordinary autograd on the torch-seam conversion."""
    from bwsk.training.reversible.convert import make_reversible, plain_autograd

    converted = make_reversible(model, kernels="torch", measure_gap=False)
    with plain_autograd(converted):
        return _on_cpu(loss_gradients(converted, ids, dtype=precision))


def _on_cpu(gradients: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradients moved off the device (references stay out of the measured variants' memory)."""
    return {name: g.cpu() for name, g in gradients.items()}
