"""The training modes side by side on one model: memory, prediction, time and gradients of one real step each.

`compare_modes(model, modes, batch=..., seq=...)` applies each mode to its own copy
of `model` (same weights) and measures, per mode: the step's peak memory (total and
by category), the activation bytes after forward beside the analysis's prediction,
the step time as a ratio to conventional timed in the same rounds (interleaved),
and the largest gradient difference against ordinary autograd on the same function
(the original model; for `reversible`, the converted model under `plain_autograd`).
Conventional is always measured: it is the reference for time and gradients.
Predictions describe fp32 execution; under autocast they are not given.
"""

from __future__ import annotations

import copy
import functools
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from rich.table import Table
from torch import nn

from bwsk.frontend.zoo import model_inputs
from bwsk.training.layers import block_list
from bwsk.training.measure import activation_bytes, loss_gradients, max_grad_difference, step_memory, step_seconds, train_step
from bwsk.training.modes import MODES, analyze_model, applied_mode, apply_mode, predicted_activation_bytes
from bwsk.training.selective import DEFAULT_BUDGET

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


MIB = 2**20


@dataclass
class Record:
    """One mode's measurements on one model shape (bytes, seconds; ratios against conventional)."""

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
    budget: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    def to_json(self) -> dict:
        return {**asdict(self), "tokens": self.tokens}


def _reference_gradients(model: nn.Module, mode: str, ids: torch.Tensor, dtype: torch.dtype | None, original: dict) -> tuple[dict, str]:
    if mode != "reversible":
        return original, "conventional"
    from bwsk.training.convert import plain_autograd

    with plain_autograd(model):
        return loss_gradients(model, ids, dtype=dtype), "plain autograd on the converted model"


def compare_modes(
    model: nn.Module,
    modes: Sequence[str],
    *,
    batch: int,
    seq: int,
    dtype: str = "fp32",
    budget: float = DEFAULT_BUDGET,
    repeats: int = 3,
    seed: int = 0,
    name: str | None = None,
) -> list[Record]:
    """Measure one training step of `model` in each of `modes`; returns a record per mode, conventional first
    (always measured: the reference).

    `model` is left untouched (each mode gets a deep copy). `repeats` timed steps per mode,
    interleaved across modes, after one untimed step; the median is reported.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown training mode(s) {', '.join(unknown)} (expected {', '.join(MODES)})")
    precision = DTYPES[dtype]
    order = ["conventional"] + [m for m in MODES if m in modes and m != "conventional"]
    (ids,) = model_inputs(model, batch=batch, seq=seq, seed=seed)
    analysis = analyze_model(model, (ids,))
    original = loss_gradients(model, ids, dtype=precision)
    layers = len(block_list(model)[1])
    label = name or getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
    records, trained = [], {}
    for mode in order:
        applied = apply_mode(copy.deepcopy(model), mode, analysis=analysis, budget=budget)
        plan = applied_mode(applied).plan
        reference, reference_name = _reference_gradients(applied, mode, ids, precision, original)
        difference = max_grad_difference(loss_gradients(applied, ids, dtype=precision), reference)
        kept = activation_bytes(applied, ids, dtype=precision)
        predicted = predicted_activation_bytes(analysis, mode, plan) if precision is None else None
        optimizer = torch.optim.AdamW([p for p in applied.parameters() if p.requires_grad], lr=1e-4)
        memory = step_memory(applied, optimizer, ids, dtype=precision)
        optimizer.zero_grad(set_to_none=True)
        notes = [f"{plan.alignment.unmatched} operator(s) off the plan (recomputed)"] if plan and plan.alignment.unmatched else []
        records.append(
            Record(
                label,
                mode,
                layers,
                batch,
                seq,
                dtype,
                ids.device.type,
                memory.peak_bytes,
                memory.source,
                memory.peak_by_category,
                kept,
                predicted,
                0.0,
                max_grad_difference=difference,
                grad_reference=reference_name,
                loss=memory.loss,
                budget=budget if mode == "analyzed" else None,
                notes=notes,
            )
        )
        trained[mode] = (applied, optimizer)
    times: dict[str, list[float]] = {mode: [] for mode in order}
    for _ in range(repeats):
        for mode in order:
            applied, optimizer = trained[mode]
            times[mode].append(step_seconds(functools.partial(train_step, applied, optimizer, ids, precision), ids.device))
            optimizer.zero_grad(set_to_none=True)
    baseline = statistics.median(times["conventional"])
    for record in records:
        record.step_seconds = statistics.median(times[record.mode])
        record.step_time_ratio = record.step_seconds / baseline if baseline else None
    return records


def records_table(records: list[Record], *, compact: bool = False) -> Table:
    """The records as a rich table: memory in MiB, prediction against measurement, time and gradients against conventional.

    `compact` keeps the columns that fit an 80-column terminal (mode, memory, time, gradients) and names
    the model and shape in the title.
    """
    first = records[0]
    title = (
        f"one training step per mode: {first.model}, {first.layers} layers, batch {first.batch} x {first.seq}"
        if compact
        else "one training step per mode"
    )
    out = Table(title=title, show_lines=False)
    columns = {
        "model": lambda r: r.model,
        "layers": lambda r: str(r.layers),
        "batch x seq": lambda r: f"{r.batch} x {r.seq}",
        "mode": lambda r: r.mode,
        "peak MiB": lambda r: f"{r.peak_bytes / MIB:.2f}",
        "activations MiB": lambda r: f"{r.activation_bytes / MIB:.3f}",
        "predicted MiB": lambda r: "n/a" if r.predicted_activation_bytes is None else f"{r.predicted_activation_bytes / MIB:.3f}",
        "pred/meas": lambda r: (
            "n/a"
            if r.predicted_activation_bytes is None or not r.activation_bytes
            else f"{r.predicted_activation_bytes / r.activation_bytes:.3f}"
        ),
        "time x conv": lambda r: f"{r.step_time_ratio:.2f}" if r.step_time_ratio is not None else "n/a",
        "max grad diff": lambda r: f"{r.max_grad_difference:.1e}" if r.max_grad_difference is not None else "n/a",
    }
    if compact:
        columns = {name: columns[name] for name in ("mode", "activations MiB", "peak MiB", "time x conv", "max grad diff")}
    for column in columns:
        out.add_column(column, justify="left" if column in ("model", "mode") else "right")
    for record in records:
        out.add_row(*(cell(record) for cell in columns.values()))
    return out
