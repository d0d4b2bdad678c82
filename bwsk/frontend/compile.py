"""From what the user has (an export archive, a Hugging Face model, a zoo name) to a Program.

`lower(ep)` lowers an ExportedProgram at the chosen level; `compile_source(spec)`
resolves, exports and lowers a source and keeps the state tensors by IR name;
`faithfulness(compiled)` evaluates the Program against the ExportedProgram.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from bwsk.errors import BwskError
from bwsk.frontend.lowering import program_from_export
from bwsk.frontend.sources import Resolved, resolve
from bwsk.frontend.tensor_outputs import TensorOutputs
from bwsk.ir.program import Program

LEVELS = ("core", "training")


def at_level(ep: torch.export.ExportedProgram, level: str) -> torch.export.ExportedProgram:
    """Core ATen (`run_decompositions()`) or the training-level IR that `torch.export.export` returns."""
    if level not in LEVELS:
        raise BwskError(f"unknown level {level!r} (expected one of {', '.join(LEVELS)})")
    return ep.run_decompositions() if level == "core" else ep


def lower(ep: torch.export.ExportedProgram, *, level: str = "core", name: str = "model", strip_prefix: str = "") -> Program:
    """Lower an ExportedProgram into a verified Program; `level` records (and selects) the IR level."""
    return program_from_export(at_level(ep, level), name=name, level=level, strip_prefix=strip_prefix)


def state_tensors(ep: torch.export.ExportedProgram, strip_prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters, buffers and constants by their IR names (state-dict names less `strip_prefix`)."""
    found: dict[str, torch.Tensor] = {}
    for spec in ep.graph_signature.input_specs:
        if spec.target is None or spec.kind.name not in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            continue
        value = ep.state_dict.get(spec.target)
        if value is None:
            value = ep.constants[spec.target]
        name = spec.target
        if strip_prefix and name.startswith(strip_prefix + "."):
            name = name[len(strip_prefix) + 1 :]
        found[name] = value
    return found


@dataclass(frozen=True)
class Compiled:
    """A lowered source: the Program, the ExportedProgram it came from, example inputs and state."""

    program: Program
    exported: torch.export.ExportedProgram
    example_inputs: tuple[Any, ...] | None
    state: Mapping[str, torch.Tensor]
    source: Resolved


def compile_source(spec: str, *, level: str = "core", **options: Any) -> Compiled:
    """Resolve `spec` (see `bwsk.frontend.sources.resolve` for options), export it and lower it."""
    source = resolve(spec, **options)
    prefix = "model" if isinstance(source.module, TensorOutputs) else ""
    exported = at_level(source.program, level)
    names = forward_parameters(source.module.model if prefix else source.module)
    program = program_from_export(exported, name=source.name, level=level, strip_prefix=prefix, input_names=names)
    return Compiled(program, exported, source.example_inputs, state_tensors(exported, prefix), source)


def forward_parameters(module: torch.nn.Module | None) -> tuple[str, ...]:
    """The names of a module's positional forward parameters (for naming program inputs)."""
    if module is None:
        return ()
    parameters = inspect.signature(module.forward).parameters.values()
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def lower_module(model: torch.nn.Module, args: tuple[torch.Tensor, ...], *, level: str = "core") -> Program:
    """Export an in-memory module (a transformers model is called on plain tensors, without cache) and lower it.

    State names are the module's own state-dict names (no wrapper prefix), so
    `program(*args, params=dict(model.named_parameters()))` evaluates it.
    """
    from bwsk.frontend.tensor_outputs import export, traceable

    exported = at_level(export(model, args), level)
    prefix = "model" if isinstance(traceable(model), TensorOutputs) else ""
    return program_from_export(exported, name=type(model).__name__, level=level, strip_prefix=prefix, input_names=forward_parameters(model))


def load(spec: str, **options: Any) -> Program:
    """The Program of an export archive, a Hugging Face directory or hub id, or a zoo name."""
    return compile_source(spec, **options).program
