"""The `analyzed` mode: selective activation checkpointing whose per-operator choice comes from the memory analysis.

Each block of the stack (see `bwsk.training.blocks`) runs under non-reentrant
`torch.utils.checkpoint` with a selective-checkpoint policy. Inside a block the
memory pass's analyzed plan decides, unit by unit: K-barrier outputs (erased, so
they cannot be rebuilt from what follows), S-phase inputs and program inputs are
stored; what an S-phase computes from its inputs is recomputed in backward. The
budget (0..1) then keeps the recomputable units that are dearest to recompute
(FLOPs per byte of the call that makes them: matmuls first) until that fraction
of the recomputable bytes is kept; 0 is the plan itself, 1 keeps everything.

A plan is per operator as the block dispatches it: each IR call of the block is
run once on meta tensors laid out as the replay laid them out, and the ATen
operators it dispatches are recorded in order (what the policy will be shown at
run time). An operator is saved when it creates a storage the plan stores (the
call's output, or a buffer autograd saves such as layer norm's mean and rstd).
At run time the policy walks that list, matching operators by overload; an
operator that does not match within a short look-ahead is recomputed (always
correct, only dearer) and counted in `Alignment`.

Prediction (bytes kept from forward to backward): outside the blocks what
autograd saves; per block the storages entering it (the checkpoint keeps its
inputs) and every storage created by a saved operator (the checkpoint caches all
of an operator's outputs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import SAC_IGNORED_OPS, CheckpointPolicy, create_selective_checkpoint_contexts

from bwsk.ir import ops
from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.dataflow import Call
from bwsk.passes.memory import Decision, Memory, Replay, fill_operands, replay
from bwsk.passes.memory.saved_tensors import flat_outputs, storage_key
from bwsk.training.modes import DEFAULT_BUDGET

LOOKAHEAD = 16


@dataclass(frozen=True)
class PlannedOp:
    """One ATen operator a block dispatches in forward: whether its outputs are cached, and their new bytes."""

    op: torch._ops.OpOverload
    save: bool
    nbytes: int  # bytes of the storages its outputs create (what caching them keeps alive)
    storage: int | None  # the replay's storage id when an output is the IR call's result storage


@dataclass
class Alignment:
    """How the run-time operators matched the plan: operators matched to a step, operators matched to none."""

    matched: int = 0
    unmatched: int = 0


@dataclass
class SelectivePlan:
    """Per block (in stack order) its operator steps, the bytes the plan predicts are stored, the budget used."""

    blocks: list[list[PlannedOp]]
    predicted_bytes: int
    budget: float
    kept: list[Decision]  # units the plan recomputes but the budget keeps
    alignment: Alignment = field(default_factory=Alignment)

    def context_fn(self, block: int) -> Callable[[], tuple[TorchDispatchMode, TorchDispatchMode]]:
        """The `context_fn` for block `block`'s checkpoint: a fresh policy walking that block's steps."""
        steps = self.blocks[block]
        return lambda: create_selective_checkpoint_contexts(_AlignedPolicy(steps, self.alignment))


class _AlignedPolicy:
    """A selective-checkpoint policy that replays a block's planned steps in dispatch order.

    An operator is matched to the earliest step not yet matched with the same overload,
    searching from the earliest unmatched step to `LOOKAHEAD` steps past the last match
    (export may reorder independent calls locally).
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


class _Dispatched(TorchDispatchMode):
    """Records the operators a call dispatches (those a selective-checkpoint policy is shown) and their outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, list[torch.Tensor]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func not in SAC_IGNORED_OPS:
            self.calls.append((func, [t for t in flat_outputs(result) if isinstance(t, torch.Tensor)]))
        return result


def _expand(call: Call, replayed: Replay) -> tuple[list[tuple[Any, list[torch.Tensor]]], set[int], list[torch.Tensor], set[int]]:
    """Run `call` on meta operands laid out as in the replay: dispatched operators, saved storage keys,
    the call's flat outputs, and the operands' storage keys."""
    operands = [replayed.layouts[v].tensor() for v in call.inputs]
    saved: set[int] = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.add(storage_key(tensor))
        return tensor

    stack = list(reversed(operands))
    args = [fill_operands(a, stack) for a in call.args]
    kwargs = {k: fill_operands(v, stack) for k, v in call.kwargs.items()}
    recorder = _Dispatched()
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), recorder:
        result = ops.resolve(call.target)(*args, **kwargs)
    outputs = [t for t in flat_outputs(result) if isinstance(t, torch.Tensor)]
    return recorder.calls, saved, outputs, {storage_key(t) for t in operands}


def _not_saved_when_mutated(steps: list[PlannedOp], outputs: list[list[int]]) -> list[PlannedOp]:
    """`steps` with no save of a storage an in-place operator writes at or after that step (it is recomputed instead).

    Selective checkpointing cannot cache such a tensor: it checks that a cached tensor's version does not change, and
    autograd bumps the version of an in-place operator's output after the policy has seen it (dropout fills
    `empty_like` with `bernoulli_`, then scales it with `div_`: its mask is recomputed, from the same RNG state).
    """
    written = {key: index for index, (step, keys) in enumerate(zip(steps, outputs)) if step.op._schema.is_mutable for key in keys}
    return [
        dataclasses.replace(step, save=False) if step.save and any(written.get(key, -1) >= index for key in keys) else step
        for index, (step, keys) in enumerate(zip(steps, outputs))
    ]


class _Planner:
    def __init__(self, analysis: Analysis, blocks: list[str], budget: float):
        self.analysis = analysis
        self.replayed = replay(analysis)
        decisions = analysis.result(Memory).decisions
        self.block_index = {path: index for index, path in enumerate(blocks)}
        self.units = {d.storage: d for d in decisions if d.storage is not None}
        self.buffers = {d.call: d for d in decisions if d.storage is None}
        self.kept = self._budgeted(decisions, budget)

    def block_of(self, call: Call) -> int | None:
        return self.block_index.get(layer_of(call.module))

    def _budgeted(self, decisions: list[Decision], budget: float) -> list[Decision]:
        """The recomputable units inside blocks that the budget keeps: dearest to recompute per byte first."""
        calls = self.analysis.calls
        candidates = [d for d in decisions if d.analyzed == "recompute" and d.saved and self.block_of(calls[d.call]) is not None]
        candidates.sort(key=lambda d: (-calls[d.call].flops / max(d.bytes, 1), d.call))
        total = sum(d.bytes for d in candidates)
        kept: list[Decision] = []
        amount = 0
        for d in candidates:
            if amount >= budget * total:
                break
            kept.append(d)
            amount += d.bytes
        return kept

    def stores(self, unit: Decision | None, kept: set[int]) -> bool:
        """Is the unit cached: autograd needs it and the plan stores it (or the budget keeps it)?"""
        return unit is not None and unit.saved and (unit.analyzed == "store" or id(unit) in kept)

    def steps(self, call: Call, kept: set[int]) -> list[PlannedOp]:
        """The operators `call` dispatches, each saved when it creates a storage the plan stores."""
        dispatched, saved, outputs, operand_keys = _expand(call, self.replayed)
        result_storage = self.replayed.storage_of.get(call.output)
        result_ids = result_storage if isinstance(result_storage, tuple) else (result_storage,)
        by_key = {storage_key(t): result_ids[i] if i < len(result_ids) else None for i, t in enumerate(outputs)}
        store_buffers = self.stores(self.buffers.get(call.index), kept)
        seen = set(operand_keys)
        steps = []
        for op, tensors in dispatched:
            save, nbytes, storage = False, 0, None
            for tensor in tensors:
                key = storage_key(tensor)
                if key in seen:
                    continue
                seen.add(key)
                nbytes += tensor.untyped_storage().nbytes()
                if key in by_key and by_key[key] is not None:
                    storage = by_key[key]
                    save = save or self.stores(self.units.get(storage), kept)
                elif key in saved:
                    save = save or store_buffers
            steps.append(PlannedOp(op, save, nbytes, storage))
        return _not_saved_when_mutated(steps, [[storage_key(t) for t in tensors] for _, tensors in dispatched])

    def plan(self, budget: float) -> SelectivePlan:
        kept = {id(d) for d in self.kept}
        blocks: list[list[PlannedOp]] = [[] for _ in self.block_index]
        stored: dict[tuple, int] = {}
        replayed = self.replayed
        calls = self.analysis.calls
        for call in calls:
            if call.target.startswith("operator."):
                continue
            block = self.block_of(call)
            if block is None:  # outside the blocks: autograd saves as usual
                for storage in replayed.saved.get(call.index, ()):
                    stored[("storage", storage)] = replayed.storages[storage].nbytes
                if replayed.extra.get(call.index):
                    stored[("buffers", call.index)] = sum(replayed.extra[call.index])
                continue
            for value in call.inputs:  # the checkpoint keeps the values entering its block
                producer = self.analysis.flow.values[value].producer
                if producer is None or self.block_of(calls[producer]) != block:
                    for storage in replayed.roots(value):
                        stored[("storage", storage)] = replayed.storages[storage].nbytes
            for position, step in enumerate(self.steps(call, kept)):
                blocks[block].append(step)
                if step.save and step.nbytes:
                    key = ("storage", step.storage) if step.storage is not None else ("step", call.index, position)
                    stored[key] = step.nbytes if step.storage is None else replayed.storages[step.storage].nbytes
        return SelectivePlan(blocks, sum(stored.values()), budget, self.kept)


def plan_selective(analysis: Analysis, blocks: list[str], *, budget: float = DEFAULT_BUDGET) -> SelectivePlan:
    """The analyzed mode's plan for the blocks at module paths `blocks` (needs the `memory` pass's result)."""
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"memory budget {budget} is outside 0..1 (the fraction of recomputable bytes kept)")
    return _Planner(analysis, blocks, budget).plan(budget)
