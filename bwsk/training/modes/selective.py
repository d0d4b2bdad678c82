"""The `analyzed` mode: selective activation checkpointing planned from the dataflow of each block, sized to a memory
budget.

Each block of the stack (see `bwsk.training.blocks`) runs under non-reentrant `torch.utils.checkpoint` with a
selective-checkpoint policy: an operator the policy caches in forward keeps its outputs and does not run again in
backward; the others run again in backward's recompute. The plan is made from one recorded forward of the model as it
will train (`bwsk.training.modes.recording`: its attention implementation, precision and shape), operator by operator:

  budget:   bytes (an int, or "6GiB", "512MiB") or a fraction of conventional activation memory (a float in (0, 1]: the
            storages autograd saves in the recorded forward), made a byte target at the recorded shape and precision.
  floor:    what is stored whatever the budget: the storages entering each block (the checkpoint holds its inputs) and
            what autograd saves outside the blocks. A target below it is refused (one-line BwskError).
  stop:     backward's recompute runs a block's operators up to the last one that makes a storage autograd saves, and
            no further: the operators after it (an MLP's output projection, the residual adds) never run again, so
            caching them buys nothing. A planner that costs every operator (torch's SAC ILP does) spends memory there.
  order:    the candidates, operators up to the stop that make new storages no later operator writes in place, are
            cached in one fixed order while they fit: first those with FLOPs (products, attention), dearest to recompute
            per byte first; then the FLOP-free ones whose outputs autograd saves (norms, activations, softmax: bound
            by memory traffic, which FLOPs do not count), smallest first; ties in block and program order. An operator
            with no FLOPs whose outputs autograd does not save is never cached (it saves no FLOPs and no saved bytes).

Invariants: `floor_bytes` <= `predicted_bytes` <= `target_bytes`; the cached operators are a prefix of one order, so a
larger budget caches a superset: it never stores fewer bytes nor recomputes more FLOPs. The prefix stops at the first
operator that does not fit (filling past it with smaller ones would break that). `recompute_flops` is what backward's
recompute runs: the FLOPs of every operator up to each block's stop that is not cached, the same count `FlopCounterMode`
makes of the step. Gradients are those of conventional training whatever the budget: recomputing replays the same
operators (and RNG state).

Not planned: rebuilding a saved value by inverting what came after it instead of recomputing it. Outside a coupling
every inverse a block offers (subtracting a branch from a residual sum, un-scaling a norm's output, un-rotating a rotary
embedding) is inexact in fp32 and bf16, so gradients would no longer equal conventional's, and the inverses that are
exact (views, concatenation, negation, widening casts) undo operators that count no FLOPs. Exact rebuilding needs the
coupling and float64 streams of the reversible mode.

At run time the policy walks each block's recorded operators in dispatch order, matching by overload within a short
look-ahead; an operator that matches none is recomputed (always correct, only dearer) and counted in `Alignment`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from bwsk.errors import BwskError
from bwsk.render.units import human_bytes
from bwsk.training.choices import Budget, budget_label, parse_budget
from bwsk.training.modes import DEFAULT_BUDGET
from bwsk.training.modes.recording import RecordedBlocks, RecordedOp, record_blocks

LOOKAHEAD = 16


@dataclass(frozen=True)
class PlannedOp:
    """One ATen operator a block dispatches in forward: whether its outputs are cached, their new bytes, its FLOPs."""

    op: torch._ops.OpOverload
    save: bool
    nbytes: int
    flops: int = 0


@dataclass
class Alignment:
    """How the run-time operators matched the plan: operators matched to a step, operators matched to none."""

    matched: int = 0
    unmatched: int = 0


@dataclass
class SelectivePlan:
    """Per block (in stack order) its operator steps; the budget, its byte target and what the plan decided.

    Bytes are at the recorded shape and precision: `floor_bytes` <= `predicted_bytes` <= `target_bytes`;
    `conventional_bytes` is what a fractional budget is a fraction of; `recompute_flops` the FLOPs backward's recompute
    runs, `checkpoint_flops` what it would run with nothing cached (the checkpoint mode). What the dataflow decided
    alone: `past_stop_flops`, the FLOPs of operators after each block's recompute stop (never run again, so never
    cached), and `written_in_place`, the operators a later in-place write keeps from being cached.
    """

    blocks: list[list[PlannedOp]]
    budget: Budget
    conventional_bytes: int
    target_bytes: int
    floor_bytes: int
    predicted_bytes: int
    recompute_flops: int
    checkpoint_flops: int
    past_stop_flops: int = 0
    written_in_place: int = 0
    alignment: Alignment = field(default_factory=Alignment)

    def cached(self) -> dict[str, int]:
        """How many operators of each name the plan caches, over every block."""
        found: dict[str, int] = {}
        for step in (step for block in self.blocks for step in block if step.save):
            name = step.op._overloadpacket.__name__
            found[name] = found.get(name, 0) + 1
        return dict(sorted(found.items()))

    def summary(self) -> dict[str, Any]:
        """The plan as JSON: budget, bytes, recompute FLOPs, and the operators it caches."""
        return {
            "budget": self.budget,
            "budget_means": budget_label(self.budget),
            "conventional_bytes": self.conventional_bytes,
            "target_bytes": self.target_bytes,
            "floor_bytes": self.floor_bytes,
            "predicted_bytes": self.predicted_bytes,
            "recompute_flops": self.recompute_flops,
            "checkpoint_flops": self.checkpoint_flops,
            "past_stop_flops": self.past_stop_flops,
            "written_in_place": self.written_in_place,
            "cached_operators": self.cached(),
        }

    def context_fn(self, block: int) -> Callable[[], tuple[TorchDispatchMode, TorchDispatchMode]]:
        """The `context_fn` for block `block`'s checkpoint: a fresh policy walking that block's steps."""
        return aligned_context_fn(self.blocks[block], self.alignment)


def aligned_context_fn(steps: list[PlannedOp], alignment: Alignment) -> Callable[[], tuple[TorchDispatchMode, TorchDispatchMode]]:
    """A checkpoint `context_fn` whose policy caches the operators `steps` mark `save`, matched in dispatch order."""
    return lambda: create_selective_checkpoint_contexts(_AlignedPolicy(steps, alignment))


class _AlignedPolicy:
    """A selective-checkpoint policy that replays a block's planned steps in dispatch order.

    An operator is matched to the earliest step not yet matched with the same overload,
    searching from the earliest unmatched step to `LOOKAHEAD` steps past the last match.
    """

    def __init__(self, steps: list[PlannedOp], alignment: Alignment):
        self.steps = steps
        self.alignment = alignment
        self.matched = {False: [False] * len(steps), True: [False] * len(steps)}  # forward, and recompute in older torch
        self.first = {False: 0, True: 0}
        self.last = {False: 0, True: 0}

    def __call__(self, ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        matched, start = self.matched[ctx.is_recompute], self.first[ctx.is_recompute]
        for index in range(start, min(max(start, self.last[ctx.is_recompute]) + LOOKAHEAD, len(self.steps))):
            if not matched[index] and self.steps[index].op == op:
                matched[index] = True
                self.last[ctx.is_recompute] = index
                while start < len(matched) and matched[start]:
                    start += 1
                self.first[ctx.is_recompute] = start
                if not ctx.is_recompute:
                    self.alignment.matched += 1
                return CheckpointPolicy.MUST_SAVE if self.steps[index].save else CheckpointPolicy.PREFER_RECOMPUTE
        if not ctx.is_recompute:
            self.alignment.unmatched += 1
        return CheckpointPolicy.PREFER_RECOMPUTE


class Planner:
    """The recorded blocks, their candidates in caching order and the floor: everything but the budget.

    `plan(budget)` can be called for many budgets on one recording (the frontier does).
    """

    def __init__(self, recorded: RecordedBlocks):
        self.recorded = recorded
        candidates = [
            (block, index, op)
            for block, (ops, stop) in enumerate(zip(recorded.blocks, recorded.stop))
            for index, op in enumerate(ops[: stop + 1])
            if self._bytes(op) > 0 and not op.written and (op.flops > 0 or op.saved)
        ]
        self.order = sorted(candidates, key=lambda c: self._rank(*c))
        self.checkpoint_flops = sum(op.flops for ops, stop in zip(recorded.blocks, recorded.stop) for op in ops[: stop + 1])
        self.past_stop_flops = sum(op.flops for ops, stop in zip(recorded.blocks, recorded.stop) for op in ops[stop + 1 :])
        self.written_in_place = sum(op.written for ops in recorded.blocks for op in ops)

    def _bytes(self, op: RecordedOp) -> int:
        return sum(n for key, n in op.made.items() if key not in self.recorded.floor_keys)

    def _rank(self, block: int, index: int, op: RecordedOp) -> tuple:
        if op.flops > 0:
            return (0, -op.flops / self._bytes(op), block, index)
        return (1, self._bytes(op), block, index)

    def plan(self, budget: Budget) -> SelectivePlan:
        """The plan under `budget` (see the module docstring); one-line BwskError for a target below the floor."""
        recorded = self.recorded
        target = budget if isinstance(budget, int) else int(budget * recorded.conventional_bytes)
        if target < recorded.floor_bytes:
            raise BwskError(
                f"the analyzed mode's budget {budget_label(budget)} ({human_bytes(target)} at the planned shape) is below its floor "
                f"of {human_bytes(recorded.floor_bytes)} ({recorded.floor_bytes / max(recorded.conventional_bytes, 1):.2f} of "
                "conventional: the values entering each block and what autograd keeps outside them)"
            )
        room, cached = target - recorded.floor_bytes, set()
        for block, index, op in self.order:
            if self._bytes(op) > room:
                break
            cached.add((block, index))
            room -= self._bytes(op)
        blocks = [
            [PlannedOp(op.op, (block, index) in cached, op.nbytes, op.flops) for index, op in enumerate(ops)]
            for block, ops in enumerate(recorded.blocks)
        ]
        saved_flops = sum(recorded.blocks[block][index].flops for block, index in cached)
        return SelectivePlan(
            blocks,
            budget,
            recorded.conventional_bytes,
            target,
            recorded.floor_bytes,
            target - room,
            self.checkpoint_flops - saved_flops,
            self.checkpoint_flops,
            self.past_stop_flops,
            self.written_in_place,
        )


def plan_selective(
    model: nn.Module,
    example_input: tuple[torch.Tensor, ...],
    *,
    budget: int | float | str = DEFAULT_BUDGET,
    dtype: torch.dtype | None = None,
) -> SelectivePlan:
    """The analyzed mode's plan for `model`'s blocks, recorded on `example_input` under autocast to `dtype` (None: the
    model's own precision), under `budget` (bytes, or a fraction of conventional activation memory: see the module
    docstring)."""
    return Planner(record_blocks(model, example_input, dtype=dtype)).plan(parse_budget(budget))
