"""Numerical check of every S-phase as one function: its outputs determine each activation input.

This is the claim `partition` makes of an S-phase (see `composite`): with the
phase's other inputs held fixed, the map from one activation input to all the
values the phase hands on is injective. The program runs once on the CPU
(random inputs shaped like its declared ones; the given weights, else random
ones) and every call's operands are captured; each S-phase is then re-run from
its captured inputs in float64, one float activation input varied at a time:

- the Jacobian of the phase's float outputs in that input must have full column
  rank (no direction is erased to first order);
- a scan of single elements over [-4, 4] must find no two values with equal
  outputs (what a full-rank Jacobian misses: x*x, x*sigmoid(x)).

Integer inputs, and inputs or Jacobians above the size limits, are skipped and
counted (compile with --tiny to check every phase). A rank deficit at the model's
own weights that vanishes at random weights and inputs is "undecided": the fixed
operands there are degenerate (an all-zero activation of a tiny model, a softmax
saturated to one-hot), which says nothing of the phase at other operating points.
Random state is drawn inside the domain the rules reading it assume (a BatchNorm
running variance is positive), so that second operating point is a valid one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from bwsk.ir.evaluator import Observer, evaluate
from bwsk.ir.ops import resolve
from bwsk.ir.program import Program
from bwsk.ir.terms import Prim
from bwsk.ir.types import TensorType, TupleType, example_tensor
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify import judgements, read_outputs
from bwsk.passes.classify.composite import value_name
from bwsk.passes.classify.oracle_collisions import bisect
from bwsk.passes.classify.oracle_operands import in_domain
from bwsk.passes.classify.rules import GETITEM, operand_name
from bwsk.passes.dataflow import Dataflow, meta_tensor
from bwsk.passes.partition import Partition, Phase

MAX_INPUT_ELEMENTS = 4096
MAX_JACOBIAN_ENTRIES = 16_000_000
RANK_RTOL = 1e-12  # float64 arithmetic; operands captured in float32 can be ill-conditioned (attention probabilities)
SCAN = torch.linspace(-4.0, 4.0, 81, dtype=torch.float64)
SCANNED_ELEMENTS = 2


@dataclass(frozen=True)
class PhaseCheck:
    """The check of one S-phase in one activation input: outcome "ok", "FAILED", "undecided" or "skipped"."""

    phase: int
    layer: str
    calls: int
    input: str
    outcome: str
    evidence: str


@dataclass(frozen=True)
class _Slot:
    """A tensor operand in a captured call: the dataflow value it is."""

    value: int


class _Capture(Observer):
    """Each call's arguments with traced values replaced by slots, and the value of every traced id."""

    def __init__(self, flow: Dataflow, sources: Mapping[int, Any]):
        self.flow = flow
        self.ids = {id(obj): vid for vid, obj in sources.items()}
        self.values: dict[int, Any] = dict(sources)
        self.keep: list[Any] = list(sources.values())
        self.templates: list[tuple[Any, Any]] = []

    def template(self, obj: Any) -> Any:
        if isinstance(obj, (torch.Tensor, tuple, list)) and id(obj) in self.ids:
            return _Slot(self.ids[id(obj)])
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.template(o) for o in obj)
        return obj

    def call(self, prim: Prim, args: list, kwargs: dict, result: Any, scope: list[str]) -> None:
        index = len(self.templates)
        self.templates.append((self.template(list(args)), {k: self.template(v) for k, v in kwargs.items()}))
        output = self.flow.calls[index].output
        self.ids[id(result)] = output
        self.values[output] = result
        self.keep.append(result)


def _wide(obj: Any) -> Any:
    """float64 copies of float tensors and float dtypes (integers and the rest unchanged)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(torch.float64) if obj.is_floating_point() else obj
    if isinstance(obj, torch.dtype):
        return torch.float64 if obj.is_floating_point else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_wide(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _wide(v) for k, v in obj.items()}
    return obj


def _fill(template: Any, env: Mapping[int, Any]) -> Any:
    if isinstance(template, _Slot):
        return env[template.value]
    if isinstance(template, (list, tuple)):
        return type(template)(_fill(t, env) for t in template)
    return template


def _example_input(
    flow: Dataflow, value: int | None, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
    """A random input; integer inputs are distinct token ids (as far as the tables they index allow).

    Repeated tokens make rows of the activations equal, and then attention's `bmm` erases for that input alone.
    The bound is the smallest embedding table that input `value` indexes directly (a token-type table of two
    rows, indexed by a buffer, must not make every token id 0 or 1), else the smallest table of all.
    """
    if dtype.is_floating_point or dtype == torch.bool:
        return example_tensor(shape, dtype, generator)
    embeddings = [c for c in flow.calls if c.target == "aten.embedding.default" and hasattr(c.args[0], "shape")]
    direct = [c.args[0].shape[0] for c in embeddings if value in c.inputs[1:]]
    bound = min(direct or [c.args[0].shape[0] for c in embeddings], default=2)
    count = math.prod(shape)
    ids = torch.randperm(bound, generator=generator)[:count] if count <= bound else torch.randint(0, bound, (count,), generator=generator)
    return ids.to(dtype).view(shape)


def _domains(flow: Dataflow, values: set[int]) -> dict[int, str]:
    """The domain (`rules.base.DOMAINS`) a rule assumes of each of `values` it reads: BatchNorm's running_var is positive."""
    read = read_outputs(flow)
    found: dict[int, str] = {}
    for call in flow.calls:
        if values.isdisjoint(call.inputs):
            continue
        names = {
            operand_name(call.target, p) if p < len(call.args) else list(call.kwargs)[p - len(call.args)]: v
            for v, p in zip(call.inputs, call.operand_positions, strict=True)
        }
        for judged in judgements(flow, call, read):
            for name, domain in judged.verdict.domain:
                if names.get(name) in values:
                    found.setdefault(names[name], domain)
    return found


def capture(
    program: Program, flow: Dataflow, weights: Mapping[str, torch.Tensor] | None, sizes: Mapping[str, int], seed: int = 0
) -> _Capture:
    """Run `program` once on the CPU and keep every call's operand templates and every value.

    State missing from `weights` is drawn at random, inside the domain the rules reading it assume.
    """
    flow.require_cpu_budget(weights or {}, "--check-classification")
    generator = torch.Generator().manual_seed(seed)
    by_source = {v.source: v.id for v in flow.values.values() if v.source is not None}
    inputs = [
        _example_input(flow, by_source.get(f"%{i.name}"), tuple(meta_tensor(i.type, sizes).shape), i.type.dtype, generator)
        for i in program.inputs
    ]
    state = dict(weights) if weights is not None else {}
    missing = {by_source[f"@{s.name}"] for s in program.state if s.name not in state}
    domains = _domains(flow, missing) if missing else {}
    for item in program.state:
        if item.name not in state:
            shape = tuple(meta_tensor(item.type, sizes).shape)
            drawn = example_tensor(shape, item.type.dtype, generator)
            # matrices scaled by 1/sqrt(fan-in), as models are initialised: N(0, 1) weights saturate softmax and tanh
            drawn = drawn / math.sqrt(shape[-1]) if drawn.is_floating_point() and len(shape) >= 2 and shape[-1] else drawn
            state[item.name] = in_domain(drawn, domains.get(by_source[f"@{item.name}"]))
    sources = {by_source[f"%{i.name}"]: t for i, t in zip(program.inputs, inputs, strict=True) if isinstance(i.type, TensorType)}
    sources.update({by_source[f"@{s.name}"]: state[s.name] for s in program.state})
    recorder = _Capture(flow, sources)
    with torch.no_grad():
        evaluate(program, inputs, state, observer=recorder, device=torch.device("cpu"))
    if len(recorder.templates) != len(flow.calls):
        raise ValueError(f"the CPU run made {len(recorder.templates)} calls, the trace {len(flow.calls)}")
    return recorder


class _PhaseFunction:
    """An S-phase as a function of one input, the others fixed at their captured values (all floats in float64)."""

    def __init__(self, flow: Dataflow, phase: Phase, captured: _Capture, varying: int, item: int | None):
        self.flow, self.phase, self.varying, self.item = flow, phase, varying, item
        self.read = read_outputs(flow)
        self.fixed = {v: _wide(captured.values[v]) for v in phase.inputs if v in captured.values}  # the rest are literals
        self.steps = [(resolve(flow.calls[c].target), _wide(captured.templates[c]), flow.calls[c].output) for c in phase.calls]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        env = dict(self.fixed)
        if self.item is None:
            env[self.varying] = x
        else:
            items = list(env[self.varying])
            items[self.item] = x
            env[self.varying] = tuple(items)
        torch.default_generator.manual_seed(0)  # random ops draw the same values on every run
        for op, (args, kwargs), output in self.steps:
            env[output] = op(*_fill(args, env), **_fill(kwargs, env))
        results = [item for v in self.phase.outputs for item in self._items(v, env[v])]
        parts = [r.reshape(-1) for r in results if isinstance(r, torch.Tensor) and r.is_floating_point()]
        return torch.cat(parts) if parts else x.new_zeros(0)

    def _items(self, value: int, result: Any) -> list[Any]:
        """A tensor output itself; of a multi-output call's results, those the program reads."""
        if not isinstance(result, (tuple, list)):
            return [result]
        return [result[i] for i in sorted(self.read.get(value, range(len(result))))]


def _collision(f: _PhaseFunction, x: torch.Tensor, position: int) -> str | None:
    """Two values of element `position` with equal outputs: bisected either side of a turning point of the most varying output."""
    flat = x.reshape(-1)

    def at(s: float) -> torch.Tensor:
        moved = flat.clone()
        moved[position] = s
        return f(moved.view(x.shape))

    curve = torch.stack([at(float(s)) for s in SCAN])
    if curve.shape[1] == 0:
        return None
    k = int((curve.max(0).values - curve.min(0).values).argmax())
    d = torch.diff(curve[:, k])
    noise = 1e-9 * max(1.0, float(curve[:, k].abs().max()))
    turns = torch.nonzero((d[:-1] * d[1:] < 0) & (d[:-1].abs() > noise) & (d[1:].abs() > noise)).reshape(-1)
    for turn in turns.tolist():
        i = turn + 1
        left, right = i - 1, i + 1
        while left > 0 and d[left - 1] * d[i - 1] > 0:
            left -= 1
        while right < len(d) and d[right] * d[i] > 0:
            right += 1
        mid = float(curve[i, k])
        near = min(float(curve[left, k]), float(curve[right, k]), key=lambda v: abs(v - mid))
        level = mid + 0.5 * (near - mid)
        a = bisect(lambda s: float(at(s)[k]), float(SCAN[left]), float(SCAN[i]), level, halvings=80)
        b = bisect(lambda s: float(at(s)[k]), float(SCAN[i]), float(SCAN[right]), level, halvings=80)
        ya, yb = at(a), at(b)
        if torch.allclose(ya, yb, rtol=0, atol=1e-8 * max(1.0, float(ya.abs().max()))):
            return f"element {position} set to {a:.4f} or {b:.4f}: outputs equal"
    return None


def _column_rank(jac: torch.Tensor) -> int:
    """Numerical rank of a Jacobian, from the singular values of its independent blocks.

    Rows and columns that share no nonzero split the matrix into blocks (per token, per head);
    its singular values are theirs together, so the rank is the same as one SVD's, at a fraction of the cost.
    """
    mask = jac != 0
    n = jac.shape[1]
    labels = torch.arange(n)
    big = torch.full_like(mask, n, dtype=torch.long)
    while True:  # each column takes the smallest label of any column it shares a row with
        row_min = torch.where(mask, labels, big).min(1).values
        merged = torch.minimum(labels, torch.where(mask, row_min[:, None], big).min(0).values)
        if torch.equal(merged, labels):
            break
        labels = merged
    values = []
    for label in labels.unique().tolist():
        columns = labels == label
        rows = mask[:, columns].any(1)
        values.append(torch.linalg.svdvals(jac[rows][:, columns]) if rows.any() else jac.new_zeros(int(columns.sum())))
    singular = torch.cat(values)
    return int((singular > RANK_RTOL * singular.max()).sum()) if singular.max() > 0 else 0


def check_input(flow: Dataflow, phase: Phase, captured: _Capture, varying: int, item: int | None = None) -> tuple[str, str]:
    """(outcome, evidence) of the phase's injectivity in input `varying` (its result `item`, for a multi-output call)."""
    x = _wide(captured.values[varying])
    x = x[item] if item is not None else x
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return "skipped", "not a float tensor"
    f = _PhaseFunction(flow, phase, captured, varying, item)
    y = f(x)
    n, m = x.numel(), y.numel()
    if n > MAX_INPUT_ELEMENTS or n * m > MAX_JACOBIAN_ENTRIES:
        return "skipped", f"{n:,} inputs x {m:,} outputs is too large"
    if n == 0:
        return "ok", "empty input"
    if not torch.isfinite(y).all():
        return "FAILED", "outputs are not finite on the sampled inputs"
    jac = torch.autograd.functional.jacobian(f, x, vectorize=True).reshape(m, n) if m else x.new_zeros(0, n)
    rank = _column_rank(jac) if m else 0
    if rank < n:
        return "FAILED", f"jacobian rank {rank}/{n}"
    generator = torch.Generator().manual_seed(phase.id)
    for position in torch.randperm(n, generator=generator)[:SCANNED_ELEMENTS].tolist():
        witness = _collision(f, x, position)
        if witness:
            return "FAILED", f"jacobian rank {n}/{n} but {witness}"
    return "ok", f"jacobian rank {n}/{n}; no collision in {min(n, SCANNED_ELEMENTS)} element scan(s)"


def _read_items(flow: Dataflow, phase: Phase, value: int) -> list[int | None]:
    """The results of a multi-output input that the phase reads (`getitem`), or [None] for a tensor."""
    if not isinstance(flow.values[value].type, TupleType):
        return [None]
    calls = (flow.calls[c] for c in phase.calls)
    return sorted({c.args[1] for c in calls if c.target == GETITEM and c.inputs[:1] == (value,)})


def check_phases(analysis: Analysis) -> list[PhaseCheck]:
    """Check every S-phase of a partitioned analysis in each of its activation inputs."""
    flow = analysis.flow
    captured = capture(analysis.program, flow, analysis.weights, analysis.sizes)
    redrawn: list[_Capture] = []  # random weights and inputs, made when a rank deficit needs a second operating point
    found = []
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(1)  # tiny operands: thread pools only contend
    try:
        for phase in analysis.result(Partition).phases:
            if phase.kind != "S":
                continue
            for varying in (v for v in phase.inputs if flow.values[v].activation):
                for item in _read_items(flow, phase, varying):
                    with torch.enable_grad():
                        outcome, evidence = check_input(flow, phase, captured, varying, item)
                        if outcome == "FAILED" and evidence.startswith("jacobian rank") and analysis.weights is not None:
                            redrawn = redrawn or [capture(analysis.program, flow, None, analysis.sizes, seed=1)]
                            again, proof = check_input(flow, phase, redrawn[0], varying, item)
                            if again == "ok":
                                outcome = "undecided"
                                evidence = (
                                    f"{evidence} at the model's weights and inputs (a degenerate operating point: zero or saturated "
                                    f"activations), {proof} at random ones"
                                )
                    name = value_name(flow, varying) + (f"[{item}]" if item is not None else "")
                    found.append(PhaseCheck(phase.id, phase.layer, len(phase.calls), name, outcome, evidence))
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    return found
