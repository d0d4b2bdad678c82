"""The four training modes and the one switch that applies them: `apply_mode(model, mode, ...)`.

  conventional: the model as it is; autograd stores every activation backward needs.
  checkpoint:   each block (see `bwsk.training.blocks`) runs under non-reentrant
                `torch.utils.checkpoint`: only block inputs are stored, each block is
                recomputed in backward.
  analyzed:     each block runs under selective activation checkpointing whose
                per-operator policy is planned from the block's recorded dataflow (`bwsk.training.modes.selective`:
                which operators backward's recompute runs, their FLOPs and bytes), sized to `budget`: the activation
                bytes to keep, as bytes (an int, or "6GiB", "512MiB") or a fraction of what conventional training
                keeps (a float in (0, 1]); below the plan's floor (block inputs, what is outside the blocks) it is
                refused.
  reversible:   `bwsk.training.reversible.convert.make_reversible`: the blocks become coupling blocks
                whose inputs are rebuilt by inversion (a different function of the same weights);
                `kernels` chooses the seam arithmetic (`seam_kernels`): "torch" (eager, each half
                runs its own norm), "triton" (bwsk's fused seam kernels: the stream update and the
                norm the next half starts with in one pass) or "auto" (Triton on CUDA, torch elsewhere).

Checkpoint, analyzed and reversible run their graph-building forwards without a KV cache (the recompute
would append to it a second time; see `bwsk.training.kv_cache`); inference and `generate` keep the
user's cache setting. The attention implementation is the user's in every mode.

The first three compute the same function as the model; modes are applied to a model
once (a model already in a mode is refused). A model that is already reversible (converted,
e.g. loaded from a `bwsk_reversible` folder) trains in the reversible mode as it is, in its own
coupling layout, and in no other mode: it computes another function than its plain
architecture (its seams are rebuilt when `kernels` asks for others than it was converted with). The analyzed plan
is recorded on the model before its blocks are wrapped; `predicted_activation_bytes` gives the bytes each mode is
predicted to keep from forward to backward (the memory pass's figure, the analyzed plan's own for `analyzed`).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import bwsk
from bwsk.errors import BwskError
from bwsk.frontend.zoo import max_positions, model_inputs
from bwsk.passes.analysis import Analysis
from bwsk.passes.memory import Memory
from bwsk.training.blocks import block_list
from bwsk.training.choices import parse_budget
from bwsk.training.kv_cache import cache_off_while_training
from bwsk.training.modes import DEFAULT_BUDGET, MODES
from bwsk.training.modes.selective import SelectivePlan, plan_selective
from bwsk.training.reversible.seams import require_known_kernels, seam_for

ANALYSIS_PASSES = ("classify", "partition", "couple", "memory")
PLANNING_BATCH, PLANNING_SEQ = 2, 16


@dataclass(frozen=True)
class AppliedMode:
    """What `apply_mode` did to a model: the mode, and for `analyzed` the plan it follows."""

    mode: str
    plan: SelectivePlan | None = None


_APPLIED: weakref.WeakKeyDictionary[nn.Module, AppliedMode] = weakref.WeakKeyDictionary()


def applied_mode(model: nn.Module) -> AppliedMode | None:
    """The mode `apply_mode` put `model` in (None for a model it has not touched)."""
    return _APPLIED.get(model)


def analyze_model(model: nn.Module, example_input: tuple[torch.Tensor, ...]) -> Analysis:
    """Lower `model` at the training level on `example_input` and run the passes the modes need."""
    program = bwsk.lower_module(model, tuple(example_input), level="training")
    return bwsk.analyze(program, passes=ANALYSIS_PASSES)


def apply_mode(
    model: nn.Module,
    mode: str,
    *,
    budget: int | float | str = DEFAULT_BUDGET,
    example_input: tuple[torch.Tensor, ...] | None = None,
    dtype: torch.dtype | None = None,
    kernels: str = "auto",
) -> nn.Module:
    """Put `model` in training mode `mode`; returns the model to train (the converted copy for `reversible`).

    `analyzed` plans on one recorded forward of `example_input` (default: `planning_input`) under autocast to `dtype`
    (None: the model's precision): pass the training batch and precision, since the plan's prediction, the byte
    target a fractional `budget` means and the order of what it caches hold at that shape and precision; `budget` is
    checked first (one-line BwskError). `kernels`: the
    reversible mode's seam arithmetic, on the model's device (see `seam_kernels`).
    """
    if mode not in MODES:
        raise BwskError(f"unknown training mode {mode!r} (expected one of {', '.join(MODES)})")
    if model in _APPLIED:
        raise BwskError(f"the model is already in mode {_APPLIED[model].mode!r}; apply a mode to a fresh copy")
    require_mode_fits(model, mode)
    budget = parse_budget(budget)
    seams = seam_kernels(kernels, mode, next((p.device for p in model.parameters()), torch.device("cpu")))
    if mode == "conventional":
        _APPLIED[model] = AppliedMode(mode)
        return model
    if mode == "reversible":
        from bwsk.training.reversible.convert import make_reversible

        converted = _reseamed(model, seams) if is_reversible(model) else make_reversible(model, inplace=True, kernels=seams)
        _APPLIED[converted] = AppliedMode(mode)
        return converted
    plan = None
    if mode == "analyzed":
        plan = plan_selective(model, planning_input(model) if example_input is None else example_input, budget=budget, dtype=dtype)
    checkpoint_blocks(model, plan)
    _APPLIED[model] = AppliedMode(mode, plan)
    return model


def checkpoint_blocks(model: nn.Module, plan: SelectivePlan | None = None) -> None:
    """Run each block of `model` under non-reentrant `torch.utils.checkpoint`, with `plan`'s selective policy when
    given (a plan of this model's blocks), and its graph-building calls without a KV cache."""
    _, blocks = block_list(model)
    for index, block in enumerate(blocks):
        options: dict[str, Any] = {"use_reentrant": False}
        if plan is not None:
            options["context_fn"] = plan.context_fn(index)
        block.forward = functools.partial(checkpoint, block.forward, **options)
    cache_off_while_training(model)


def planning_input(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """The input the analyzed mode plans on when none is given: the model's main input at batch 2, sequence 16 (or
    its position limit), random values (one-line BwskError for a model whose input bwsk cannot make: pass example_input).
    """
    config = getattr(model, "config", None)
    if config is None:
        raise BwskError(
            f"the analyzed mode needs example_input (or an analysis) for a {type(model).__name__}: it has no config to make one from"
        )
    return model_inputs(model, batch=PLANNING_BATCH, seq=min(PLANNING_SEQ, max_positions(config) or PLANNING_SEQ))


def seam_kernels(kernels: str, mode: str, device: torch.device | str) -> str | None:
    """The seam arithmetic `kernels` gives `mode` on `device`: "torch" or "triton" for reversible, None for the
    other modes (they have no seams). One-line BwskError for an unknown value, "triton" asked of another mode,
    or Triton seams where they cannot run: off CUDA, unless TRITON_INTERPRET=1 runs Triton's CPU interpreter.
    """
    require_known_kernels(kernels)
    if mode != "reversible":
        if kernels == "triton":
            raise BwskError(f"kernels 'triton' are the reversible mode's seams; the {mode} mode has none (use auto or torch)")
        return None
    from bwsk.kernels.runtime import runs_on

    seams = seam_for(kernels, device).name
    if seams == "triton" and not runs_on(device):
        raise BwskError(
            f"Triton seam kernels need a CUDA device, and the model is on {torch.device(device).type}: "
            "use kernels torch (or auto), or set TRITON_INTERPRET=1 to run them in Triton's slow CPU interpreter"
        )
    return seams


def _reseamed(model: nn.Module, seams: str) -> nn.Module:
    """A reversible `model` running `seams` (a model loaded from a `bwsk_reversible` folder is converted on the cpu,
    with torch seams; on CUDA it gets the seams asked for)."""
    from bwsk.training.reversible.convert import reversible_runtime, set_kernels

    if reversible_runtime(model).kernels != seams:
        set_kernels(model, seams)
    return model


def require_mode_fits(model: nn.Module, mode: str) -> None:
    """Refuse to train a reversible model in a mode other than reversible (one line: the function would change)."""
    if mode != "reversible" and is_reversible(model):
        raise BwskError(
            f"the model is reversible (bwsk_reversible: coupled layers, another function than a plain {type(model).__name__}); "
            f"it trains further in the reversible mode only, not {mode!r} (pass --mode reversible, or start from a plain model)"
        )


def is_reversible(model: nn.Module) -> bool:
    """Whether `model` is reversible (converted by `make_reversible`, or loaded from a `bwsk_reversible` folder)."""
    from bwsk.training.reversible.convert import RUNTIME_ATTRIBUTE

    return hasattr(model, RUNTIME_ATTRIBUTE)


def predicted_activation_bytes(analysis: Analysis, mode: str, plan: SelectivePlan | None = None) -> int:
    """Bytes the analysis predicts `mode` keeps from forward to backward (for `analyzed`, those of `plan`)."""
    if mode == "analyzed":
        if plan is None:
            raise ValueError("the analyzed prediction is the plan's: pass the plan apply_mode made")
        return plan.predicted_bytes
    return analysis.result(Memory).modes[mode].stored
