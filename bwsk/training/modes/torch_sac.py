"""Torch's own selective-checkpointing planner for the same blocks and budget: the baseline the analyzed plan is
measured against (`benchmarks/memory.py --frontier`).

    plan = torch_sac_plan(model, (ids,), target_bytes=..., floor_bytes=...)
    model's block i then runs under checkpoint(..., context_fn=plan.context_fn(i)), as the analyzed mode's do

`torch.distributed._tools.sac_estimator.SACEstimator` records each block's operators (their output bytes, and which
are views, in place or random) on fake tensors, and `sac_ilp.get_optimal_checkpointing_policy_per_module` solves, per
block, the 0/1 program that keeps the most operator runtime under a share of the block's operator bytes (the `pulp`
package's CBC solver; install `bwsk[sac]`). Torch's estimator times operators on a GPU (a benchmark, or a roofline
that needs CUDA); here each operator's runtime is its counted FLOPs (`bwsk.training.modes.flops`, plus one, so that
every operator takes part in the program: pulp leaves a variable with no coefficient unset), so the ILP minimises the
same recompute FLOPs the frontier reports. Each block gets an equal share of the room above the floor:
(target - floor) / blocks, as a fraction of that block's operator bytes.

The ILP's own model is kept as torch states it: every operator it does not save counts as recomputed, the ones past
the recompute stop included (see `bwsk.training.modes.selective`), and the block's last operator costs no bytes.
`predicted_bytes` and `recompute_flops` are the ILP's predictions by that model; the frontier measures both.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from bwsk.errors import BwskError
from bwsk.training.blocks import block_paths
from bwsk.training.language_model import autocast
from bwsk.training.modes.flops import operator_flops
from bwsk.training.modes.recording import fake_weights
from bwsk.training.modes.selective import PlannedOp, SelectivePlan


def _flops_as_runtime(func, args, kwargs):
    kwargs = kwargs or {}
    out = func(*args, **kwargs)
    return out, float(operator_flops(func, args, kwargs, out) + 1)


def torch_sac_plan(
    model: nn.Module,
    example_input: tuple[torch.Tensor, ...],
    *,
    target_bytes: int,
    floor_bytes: int,
    conventional_bytes: int,
    dtype: torch.dtype | None = None,
) -> SelectivePlan:
    """Torch's SAC ILP policy for `model`'s blocks on `example_input` within `target_bytes` of activations, of which
    `floor_bytes` are what checkpointing every block keeps anyway (one-line BwskError without pulp)."""
    try:
        from torch.distributed._tools.sac_estimator import OPS_TO_ALWAYS_SKIP, SACEstimator
        from torch.distributed._tools.sac_ilp import get_optimal_checkpointing_policy_per_module
    except ImportError as error:
        raise BwskError(f"torch's SAC ILP needs the pulp package ({error}): pip install 'bwsk[sac]'") from error
    weights = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    paths = block_paths(model)
    estimator = SACEstimator()
    estimator._estimate_runtime = _flops_as_runtime  # FLOPs for time: see the module docstring
    with fake_weights(model, weights, example_input) as (fakes, fake_input):
        device = next(iter(fakes.values()), fake_input[0]).device
        with estimator, autocast(device, dtype):
            functional_call(model, fakes, fake_input)
    room = max(target_bytes - floor_bytes, 0) / len(paths)
    blocks, predicted, recomputed, everything = [], floor_bytes, 0, 0
    for path in paths:
        name = next(n for n in estimator.sac_mod_stats if n.endswith("." + path))
        stats = estimator.sac_mod_stats[name]
        ops = [m for m in estimator._sac_mod_metadata[name].sac_metadata if m.func not in OPS_TO_ALWAYS_SKIP]
        share = min(1.0, room / max(sum(stats.memory), 1))
        decisions = get_optimal_checkpointing_policy_per_module(stats, share)
        if len(decisions) != len(ops):
            raise BwskError(f"torch's SAC ILP found no policy for {path} at {share:.3f} of its operator bytes")
        blocks.append(
            [PlannedOp(m.func, bool(d), int(mem), int(m.time_taken) - 1) for m, d, mem in zip(ops, decisions, stats.memory, strict=True)]
        )
        predicted += sum(mem for mem, d in zip(stats.memory, decisions) if d)
        recomputed += sum(int(t) - 1 for t, d in zip(stats.runtimes, decisions) if not d)
        everything += sum(int(t) - 1 for t in stats.runtimes)
    return SelectivePlan(blocks, target_bytes, conventional_bytes, target_bytes, floor_bytes, predicted, recomputed, everything)
