"""Does a Program compute what the ExportedProgram it was lowered from computes? Evaluate both and compare."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

from bwsk.errors import BwskError
from bwsk.frontend.compile import Compiled
from bwsk.frontend.sources import InputSpec

FP32_RTOL = 1e-5


@dataclass(frozen=True)
class Faithfulness:
    """Largest errors of the Program against the ExportedProgram on the same inputs and weights.

    `max_rel` is the largest absolute error divided by the largest reference magnitude,
    per output, maximised over outputs (elementwise ratios blow up near zero).
    """

    max_abs: float
    max_rel: float
    outputs: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_rel <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{verdict}: {self.outputs} output(s), max abs error {self.max_abs:.3g}, "
            f"max relative error {self.max_rel:.3g} (tolerance {self.tolerance:g})"
        )


def faithfulness(compiled: Compiled, *, inputs: tuple | None = None, tolerance: float = FP32_RTOL, seed: int = 0) -> Faithfulness:
    """Evaluate the Program and the ExportedProgram on the same inputs (stored examples by default)."""
    if any(t.device.type == "meta" for t in compiled.state.values()):
        raise BwskError("the model has no weights (built on the meta device); rebuild it on the cpu to verify")
    inputs = inputs if inputs is not None else compiled.example_inputs
    if inputs is None:
        inputs = _random_inputs(compiled.exported, seed)
    expected = pytree.tree_leaves(_run_exported(compiled.exported, inputs))
    got = compiled.program(*inputs, params=compiled.state)
    got = list(got) if isinstance(got, tuple) else [got]
    if len(got) != len(expected):
        raise BwskError(f"the program has {len(got)} output(s), the export {len(expected)}")
    max_abs = max_rel = 0.0
    for a, b in zip(got, expected):
        error = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
        scale = b.double().abs().max().item() if b.numel() else 0.0
        max_abs = max(max_abs, error)
        max_rel = max(max_rel, error / scale if scale else error)
    return Faithfulness(max_abs, max_rel, len(got), tolerance)


def _run_exported(ep: torch.export.ExportedProgram, inputs: tuple) -> object:
    """Call the ExportedProgram on its flat user inputs; those it took by keyword (`use_cache=False`) by keyword."""
    in_spec = ep.call_spec.in_spec
    if in_spec is None or in_spec.num_leaves != len(inputs):
        return ep.module()(*inputs)
    args, kwargs = pytree.tree_unflatten(list(inputs), in_spec)
    return ep.module()(*args, **kwargs)


def _random_inputs(ep: torch.export.ExportedProgram, seed: int) -> tuple[object, ...]:
    """Random tensors shaped like the export's user inputs (symbolic sizes at their hints); constant inputs as exported."""
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name != "USER_INPUT":
            continue
        if isinstance(spec.arg, torch.export.graph_signature.ConstantArgument):
            inputs.append(spec.arg.value)
            continue
        node = next(n for n in ep.graph.nodes if n.name == spec.arg.name)
        value = node.meta["val"]
        shape = tuple(int(s.node.hint) if isinstance(s, torch.SymInt) else int(s) for s in value.shape)
        inputs.append(InputSpec(shape, value.dtype).example(generator))
    return tuple(inputs)
