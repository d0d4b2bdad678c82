"""The memory/recompute frontier of a model's blocks: activation bytes kept (measured) against recompute FLOPs
(counted), for the analyzed plan and torch's SAC ILP at the same budgets, beside conventional, per-layer checkpoint
and reversible.

    points = measure_frontier(config, batch=1, seq=4096, budgets=[0.2, 0.5, 0.8], dtype=torch.bfloat16)

Each point is one forward and backward (the chunked next-token loss, no optimizer step) of the model built from
`config` (transformers' defaults: sdpa attention; fake tensors unless `fake=False`), under MemTracker and
`FlopCounterMode`:

  activation_bytes: MemTracker's activations alive after the forward: what the step keeps for backward.
  recompute_flops:  the step's FLOPs minus conventional's: what backward's recompute adds (for reversible, the
                    rebuild of each block's inputs: a different function of the same weights).

A budget is a fraction of conventional activation memory as the analyzed plan records it (`recording`); torch's ILP
(`torch_sac`) gets the same byte target and floor. Both plans' predictions are kept beside the measurements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from bwsk.training.language_model import autocast, next_token_loss
from bwsk.training.modes.apply import apply_mode, checkpoint_blocks
from bwsk.training.modes.flops import counting_flops
from bwsk.training.modes.peak_tracker import PeakTracker
from bwsk.training.modes.recording import record_blocks, unpacked_positions
from bwsk.training.modes.selective import Planner
from bwsk.training.modes.torch_sac import torch_sac_plan

ANALYZED, TORCH_SAC = "analyzed", "torch SAC ILP"


@dataclass(frozen=True)
class FrontierPoint:
    """One measured step: who planned it (a planner at a budget, or a mode), what it kept and what it recomputed."""

    model: str
    planner: str  # ANALYZED, TORCH_SAC, or the mode: conventional, checkpoint, reversible
    budget: float | None
    target_bytes: int | None
    predicted_bytes: int | None
    predicted_recompute_flops: int | None
    activation_bytes: int
    recompute_flops: int
    conventional_bytes: int  # measured, for the fraction
    step_flops: int

    @property
    def fraction(self) -> float:
        return self.activation_bytes / self.conventional_bytes


def measure_frontier(
    config: Any,
    *,
    batch: int,
    seq: int,
    budgets: list[float],
    dtype: torch.dtype | None = None,
    fake: bool = True,
    name: str | None = None,
    reversible: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> list[FrontierPoint]:
    """Conventional, checkpoint, each planner at each budget (a budget below the floor is skipped), and reversible."""
    label = name or config.model_type
    ids_shape = (batch, seq)

    @contextlib.contextmanager
    def built(mode: str = "conventional"):
        values = FakeTensorMode() if fake else contextlib.nullcontext()
        with torch.random.fork_rng(devices=[]), values, unpacked_positions():
            torch.manual_seed(0)
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_config(config).train()
            ids = torch.randint(config.vocab_size, ids_shape)
            yield (apply_mode(model, mode) if mode == "reversible" else model), ids

    def step(model: nn.Module, ids: torch.Tensor) -> tuple[int, int]:
        tracker = PeakTracker()
        tracker.track_external(model, ids)
        with counting_flops() as counter:
            with tracker:
                with autocast(ids.device, dtype):
                    loss = next_token_loss(model, ids, chunked=True)
                kept = tracker.categories("current").get("Activation", 0)
            loss.backward()
        return kept, counter.get_total_flops()

    progress(f"{label}: conventional")
    with built() as (model, ids):
        conventional_bytes, conventional_flops = step(model, ids)
        recorded = record_blocks(model, (ids,), dtype=dtype)

    def point(planner: str, kept: int, flops: int, **predicted: Any) -> FrontierPoint:
        fields = {"budget": None, "target_bytes": None, "predicted_bytes": None, "predicted_recompute_flops": None} | predicted
        return FrontierPoint(label, planner, **fields, activation_bytes=kept, recompute_flops=flops - conventional_flops,
                             conventional_bytes=conventional_bytes, step_flops=flops)  # fmt: skip

    points = [point("conventional", conventional_bytes, conventional_flops)]
    progress(f"{label}: checkpoint")
    with built() as (model, ids):
        checkpoint_blocks(model)
        points.append(point("checkpoint", *step(model, ids)))
    planner = Planner(recorded)
    for budget in budgets:
        if int(budget * recorded.conventional_bytes) < recorded.floor_bytes:
            continue
        analyzed = planner.plan(budget)
        for who in (ANALYZED, TORCH_SAC):
            progress(f"{label}: {who} at {budget:g}")
            with built() as (model, ids):
                plan = analyzed
                if who == TORCH_SAC:
                    plan = torch_sac_plan(
                        model,
                        (ids,),
                        target_bytes=analyzed.target_bytes,
                        floor_bytes=recorded.floor_bytes,
                        conventional_bytes=recorded.conventional_bytes,
                        dtype=dtype,
                    )
                checkpoint_blocks(model, plan)
                kept, flops = step(model, ids)
            points.append(
                point(
                    who,
                    kept,
                    flops,
                    budget=budget,
                    target_bytes=plan.target_bytes,
                    predicted_bytes=plan.predicted_bytes,
                    predicted_recompute_flops=plan.recompute_flops,
                )  # fmt: skip
            )
    if reversible:
        progress(f"{label}: reversible")
        with built("reversible") as (model, ids):
            points.append(point("reversible", *step(model, ids)))
    return points
