"""The `analyzed` mode: selective activation checkpointing whose per-operator choice comes from the memory analysis,
sized to a memory budget.

Each block of the stack (see `bwsk.training.blocks`) runs under non-reentrant
`torch.utils.checkpoint` with a selective-checkpoint policy, which caches some of the block's operators in forward
and recomputes the others in backward. What is cached is decided per unit of saved memory (a storage autograd
saves inside a block, or one call's extra buffers), under a byte target:

  budget:   bytes (an int, or "6GiB", "512MiB") or a fraction of conventional activation memory (a float in (0, 1]:
            the bytes autograd keeps from forward to backward for the same model and input, the memory pass's
            `modes["conventional"]`), made a byte target at the planning shape (the analysis's input). Bytes are
            counted as the analysis runs the model, in its own dtype: under autocast the stored bytes differ.
  floor:    what is stored whatever the budget: the storages entering each block (the checkpoint keeps its
            inputs) and what autograd saves outside the blocks. A target below it is refused (one-line BwskError).
  S/K plan: the analysis's own plan stores K-barrier outputs (erased: what follows cannot rebuild them), their
            buffers and the inputs of S-phases, and recomputes what each S-phase computes from its inputs.
  order:    units are grouped by the operators that make them (caching an operator caches all its outputs), and
            groups are kept in one fixed order while they fit the target: groups that add no bytes, then the groups
            the S/K plan stores, then those it recomputes, each part dearest to recompute first (FLOPs of the calls
            that make the group per byte it adds). So a target above the S/K plan's bytes keeps all it stores plus the
            dearest recomputable groups; a target between the floor and the S/K plan drops (recomputes) the K-barrier
            outputs and S-phase inputs that are cheapest to recompute per byte. The S/K part goes first although its
            operators (norms, softmax, activation functions) count few FLOPs: they are bound by memory traffic,
            which FLOPs do not count.

Invariants: the predicted stored bytes are at most the target; the kept groups are a prefix of one order, so a larger
budget keeps a superset: it never stores fewer bytes nor recomputes more FLOPs (`recompute_flops`: the FLOPs of the
block calls whose result is not cached and that the recompute reaches). The prefix stops at the first group that does
not fit, leaving less than that group's bytes of the target unused (filling past it with smaller groups would break
that monotonicity). Units written in place after they are made (dropout's mask) cannot be cached and are always
recomputed. Gradients are those of conventional training whatever the budget: recomputing replays the same
operators (and RNG state).

A plan is per operator as the block dispatches it: each IR call of the block is
run once on meta tensors laid out as the replay laid them out, and the ATen
operators it dispatches are recorded in order (what the policy will be shown at
run time). At run time the policy walks that list, matching operators by overload; an
operator that does not match within a short look-ahead is recomputed (always
correct, only dearer) and counted in `Alignment`.

Prediction (bytes kept from forward to backward): the floor plus every storage created by a cached operator (the
checkpoint caches all of an operator's outputs). Not predicted: tensors a block receives that none of its calls
reads (the IR sees reads, not arguments), which the checkpoint keeps too: a Hugging Face layer's position ids and
cache positions when the rotary tables come precomputed, 8 bytes per token once for the whole stack. The measured
bytes can exceed a target the plan fills to the byte by that much.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import SAC_IGNORED_OPS, CheckpointPolicy, create_selective_checkpoint_contexts

from bwsk.errors import BwskError
from bwsk.ir import ops
from bwsk.passes.analysis import Analysis, layer_of
from bwsk.passes.dataflow import Call
from bwsk.passes.memory import Decision, Memory, Replay, fill_operands, replay
from bwsk.passes.memory.saved_tensors import flat_outputs, storage_key
from bwsk.render.units import human_bytes
from bwsk.training.choices import Budget, budget_label, parse_budget
from bwsk.training.modes import DEFAULT_BUDGET

LOOKAHEAD = 16
BY_ANALYSIS, BY_BUDGET, IN_PLACE = "analysis", "budget", "in place"  # who decided a unit (`UnitChoice.by`)


@dataclass(frozen=True)
class PlannedOp:
    """One ATen operator a block dispatches in forward: whether its outputs are cached, and their new bytes."""

    op: torch._ops.OpOverload
    save: bool
    nbytes: int  # bytes of the storages its outputs create (what caching them keeps alive)


@dataclass(frozen=True)
class UnitChoice:
    """A unit autograd saves inside a block, whether the plan caches it, and what decided: the S/K plan
    (`BY_ANALYSIS`: `unit.analyzed` and `unit.reason`), the budget against it (`BY_BUDGET`), or an in-place
    write that forbids caching it (`IN_PLACE`)."""

    unit: Decision
    stored: bool
    by: str


@dataclass
class Alignment:
    """How the run-time operators matched the plan: operators matched to a step, operators matched to none."""

    matched: int = 0
    unmatched: int = 0


@dataclass
class SelectivePlan:
    """Per block (in stack order) its operator steps; the budget, its byte target and what the plan decided.

    Bytes are at the planning shape: `floor_bytes` <= `predicted_bytes` <= `target_bytes`; `conventional_bytes` is
    what a fractional budget is a fraction of; `analysis_bytes` what the S/K plan alone would store;
    `recompute_flops` the FLOPs of the block calls recomputed in backward.
    """

    blocks: list[list[PlannedOp]]
    budget: Budget
    conventional_bytes: int
    target_bytes: int
    floor_bytes: int
    analysis_bytes: int
    predicted_bytes: int
    recompute_flops: int
    choices: list[UnitChoice]
    alignment: Alignment = field(default_factory=Alignment)

    @property
    def kept(self) -> list[Decision]:
        """Units the S/K plan recomputes but the budget stores."""
        return [c.unit for c in self.choices if c.by == BY_BUDGET and c.stored]

    @property
    def dropped(self) -> list[Decision]:
        """Units the S/K plan stores (K-barrier outputs, S-phase inputs) but the budget recomputes."""
        return [c.unit for c in self.choices if c.by == BY_BUDGET and not c.stored]

    def summary(self) -> dict[str, Any]:
        """The plan as JSON: budget, bytes, recompute FLOPs, and how many units (and bytes) each kind of decision took."""
        decided: dict[str, dict[str, int]] = {}
        for choice in self.choices:
            entry = decided.setdefault(f"{'stored' if choice.stored else 'recomputed'} by {choice.by}", {"units": 0, "bytes": 0})
            entry["units"] += 1
            entry["bytes"] += choice.unit.bytes
        return {
            "budget": self.budget,
            "budget_means": budget_label(self.budget),
            "conventional_bytes": self.conventional_bytes,
            "target_bytes": self.target_bytes,
            "floor_bytes": self.floor_bytes,
            "analysis_bytes": self.analysis_bytes,
            "predicted_bytes": self.predicted_bytes,
            "recompute_flops": self.recompute_flops,
            "decisions": dict(sorted(decided.items())),
        }

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


def _written_later(dispatched: list[tuple[Any, list[torch.Tensor]]]) -> list[bool]:
    """Per operator, whether an in-place operator writes one of its output storages at or after it.

    Selective checkpointing cannot cache such a tensor: it checks that a cached tensor's version does not change, and
    autograd bumps the version of an in-place operator's output after the policy has seen it (dropout fills
    `empty_like` with `bernoulli_`, then scales it with `div_`: its mask is recomputed, from the same RNG state).
    """
    keys = [[storage_key(t) for t in tensors] for _, tensors in dispatched]
    written = {key: index for index, ((op, _), found) in enumerate(zip(dispatched, keys)) if op._schema.is_mutable for key in found}
    return [any(written.get(key, -1) >= index for key in found) for index, found in enumerate(keys)]


@dataclass
class _Step:
    """One operator of a block call: the stored-bytes entries caching it adds, the units it makes, whether it can be
    cached, and whether it makes the call's result."""

    op: torch._ops.OpOverload
    nbytes: int
    entries: dict[tuple, int]
    units: frozenset[int]  # indices into the memory pass's decisions
    cacheable: bool
    result: bool


@dataclass
class _Group:
    """Units that one or more shared operators make: kept or dropped together."""

    units: list[int]
    steps: list[_Step]
    added_bytes: int  # beyond the floor
    flops: int  # of the calls making its units
    analysis_stores: bool


class _Planner:
    """The steps of every block call, the floor, and the groups in keeping order (independent of the budget)."""

    def __init__(self, analysis: Analysis, blocks: list[str]):
        self.analysis = analysis
        self.replayed = replay(analysis)
        memory = analysis.result(Memory)
        self.conventional_bytes = memory.modes["conventional"].stored
        self.decisions = memory.decisions
        self.block_index = {path: index for index, path in enumerate(blocks)}
        self.units = {d.storage: i for i, d in enumerate(self.decisions) if d.storage is not None and d.saved}
        self.buffers = {d.call: i for i, d in enumerate(self.decisions) if d.storage is None and d.saved}
        self.floor: dict[tuple, int] = {}
        self.steps: list[list[tuple[Call, list[_Step]]]] = [[] for _ in blocks]
        self._walk()
        self.replayed_calls = [self._replayed_calls(block) for block in self.steps]
        self.floor_bytes = sum(self.floor.values())
        self.groups = sorted(self._groups(), key=lambda g: (g.added_bytes > 0, not g.analysis_stores, -g.flops / max(g.added_bytes, 1)))
        self.analysis_bytes = self.floor_bytes + sum(g.added_bytes for g in self.groups if g.analysis_stores)
        self.cacheable = {unit for group in self.groups for unit in group.units}

    def block_of(self, call: Call) -> int | None:
        return self.block_index.get(layer_of(call.module))

    def _walk(self) -> None:
        replayed, calls = self.replayed, self.analysis.calls
        for call in calls:
            if call.target.startswith("operator."):
                continue
            block = self.block_of(call)
            if block is None:  # outside the blocks: autograd saves as usual
                for storage in replayed.saved.get(call.index, ()):
                    self.floor[("storage", storage)] = replayed.storages[storage].nbytes
                if replayed.extra.get(call.index):
                    self.floor[("buffers", call.index)] = sum(replayed.extra[call.index])
                continue
            for value in call.inputs:  # the checkpoint keeps the values entering its block
                producer = self.analysis.flow.values[value].producer
                if producer is None or self.block_of(calls[producer]) != block:
                    for storage in replayed.roots(value):
                        self.floor[("storage", storage)] = replayed.storages[storage].nbytes
            self.steps[block].append((call, self._call_steps(call)))

    def _replayed_calls(self, block: list[tuple[Call, list[_Step]]]) -> int:
        """How many of a block's calls backward's recompute runs: up to the last call autograd saves tensors for (the
        checkpoint stops once every saved tensor is back; cached operators return theirs, the others run again)."""
        saving = [i for i, (call, _) in enumerate(block) if self.replayed.saved.get(call.index) or self.replayed.extra.get(call.index)]
        return max(saving, default=-1) + 1

    def _call_steps(self, call: Call) -> list[_Step]:
        """The operators `call` dispatches, each with the storages it creates and the units among them."""
        dispatched, saved, outputs, operand_keys = _expand(call, self.replayed)
        result_storage = self.replayed.storage_of.get(call.output)
        result_ids = result_storage if isinstance(result_storage, tuple) else (result_storage,)
        by_key = {storage_key(t): result_ids[i] if i < len(result_ids) else None for i, t in enumerate(outputs)}
        buffers = self.buffers.get(call.index)
        seen = set(operand_keys)
        steps = []
        for position, ((op, tensors), written) in enumerate(zip(dispatched, _written_later(dispatched))):
            entries: dict[tuple, int] = {}
            units: set[int] = set()
            result = False
            for item, tensor in enumerate(tensors):
                key = storage_key(tensor)
                if key in seen:
                    continue
                seen.add(key)
                nbytes = tensor.untyped_storage().nbytes()
                storage = by_key.get(key)
                if storage is not None:
                    entries[("storage", storage)] = self.replayed.storages[storage].nbytes
                    result = True
                    unit = self.units.get(storage)
                else:
                    entries[("step", call.index, position, item)] = nbytes
                    unit = buffers if key in saved else None
                if unit is not None:
                    units.add(unit)
            steps.append(_Step(op, sum(entries.values()), entries, frozenset(units), not written, result))
        return steps

    def _groups(self) -> list[_Group]:
        """Units joined when an operator makes several of them (union-find over the cacheable steps)."""
        parent: dict[int, int] = {}

        def root(unit: int) -> int:
            while parent.setdefault(unit, unit) != unit:
                unit = parent[unit]
            return unit

        cacheable = [step for block in self.steps for _, steps in block for step in steps if step.cacheable and step.units]
        for step in cacheable:
            first, *rest = sorted(step.units)
            for unit in rest:
                parent[root(unit)] = root(first)
        members: dict[int, list[_Step]] = {}
        for step in cacheable:
            members.setdefault(root(min(step.units)), []).append(step)
        groups = []
        for steps in members.values():
            units = sorted({unit for step in steps for unit in step.units})
            entries = {key: n for step in steps for key, n in step.entries.items() if key not in self.floor}
            made_by = {self.decisions[unit].call for unit in units}
            flops = sum(self.analysis.calls[c].flops for c in made_by)
            stores = any(self.decisions[unit].analyzed == "store" for unit in units)
            groups.append(_Group(units, steps, sum(entries.values()), flops, stores))
        return sorted(groups, key=lambda g: g.units[0])  # program order: the tie-break of the keeping order

    def plan(self, budget: Budget) -> SelectivePlan:
        """The plan under `budget` (see the module docstring); one-line BwskError for a target below the floor."""
        target = budget if isinstance(budget, int) else int(budget * self.conventional_bytes)
        if target < self.floor_bytes:
            raise BwskError(
                f"the analyzed mode's budget {budget_label(budget)} ({human_bytes(target)} at the planning shape) is below its floor "
                f"of {human_bytes(self.floor_bytes)} ({self.floor_bytes / max(self.conventional_bytes, 1):.2f} of conventional: the values "
                "entering each block and what autograd keeps outside them)"
            )
        kept: list[_Group] = []
        room = target - self.floor_bytes
        for group in self.groups:
            if group.added_bytes > room:
                break
            kept.append(group)
            room -= group.added_bytes
        cached = {id(step) for group in kept for step in group.steps}
        return self._selective_plan(budget, target, cached)

    def _selective_plan(self, budget: Budget, target: int, cached: set[int]) -> SelectivePlan:
        stored = dict(self.floor)
        blocks: list[list[PlannedOp]] = []
        recompute_flops = 0
        unit_stored: dict[int, bool] = {}
        for block, replayed_calls in zip(self.steps, self.replayed_calls):
            planned = []
            for position, (call, steps) in enumerate(block):
                recomputed = False
                for step in steps:
                    save = id(step) in cached
                    planned.append(PlannedOp(step.op, save, step.nbytes))
                    if save:
                        stored.update(step.entries)
                    recomputed = recomputed or (step.result and not save)
                    for unit in step.units:
                        unit_stored[unit] = unit_stored.get(unit, False) or save
                recompute_flops += call.flops if recomputed and position < replayed_calls else 0
            blocks.append(planned)
        choices = [self._choice(unit, unit_stored[unit]) for unit in sorted(unit_stored)]
        predicted = sum(stored.values())
        return SelectivePlan(
            blocks, budget, self.conventional_bytes, target, self.floor_bytes, self.analysis_bytes, predicted, recompute_flops, choices
        )

    def _choice(self, unit: int, stored: bool) -> UnitChoice:
        decision = self.decisions[unit]
        if unit not in self.cacheable:
            return UnitChoice(decision, False, IN_PLACE)
        return UnitChoice(decision, stored, BY_ANALYSIS if stored == (decision.analyzed == "store") else BY_BUDGET)


def plan_selective(analysis: Analysis, blocks: list[str], *, budget: int | float | str = DEFAULT_BUDGET) -> SelectivePlan:
    """The analyzed mode's plan for the blocks at module paths `blocks` under `budget` (bytes, or a fraction of
    conventional activation memory: see the module docstring; needs the `memory` pass's result)."""
    return _Planner(analysis, blocks).plan(parse_budget(budget))
