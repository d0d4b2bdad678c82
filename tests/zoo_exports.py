"""Tiny zoo models, exported and lowered once per test session (per xdist worker) and shared across test files.

Exporting is most of what a compiler test costs, so tests that do not test a shape use the one
shape here (2 layers, sequence 8, batch 1): each model is then exported once per level and
device, whichever file asks first. A Compiled and its Program are immutable; an Analysis is
not, so each test builds its own (tracing and the passes cost a fraction of the export).

Sweeps over the zoo take `zoo_sweep()`: every zoo model whose tiny `LAYERS`-layer build is not one
an earlier name already builds. The other sizes of an architecture (pythia-160m ... pythia-1b,
gpt2-medium) differ from its first model only in depth, which `LAYERS` overrides, so at this
size they are the same model to the byte and are left out. `make test` runs a sweep's first
model; the rest are marked `sweep` (`make check`, CI, runs them): `sweep_after_first`.
"""

from __future__ import annotations

import functools

import pytest

from bwsk.frontend import zoo
from bwsk.frontend.compile import Compiled, compile_source
from bwsk.ir.program import Program

LAYERS = 2
SEQ = 8


def tiny_compiled(name: str, level: str = "core", *, device: str = "meta", layers: int = LAYERS, seq: int = SEQ) -> Compiled:
    """The tiny zoo model `name` lowered at `level`; with device "cpu" it has weights and runs eagerly, with "meta" not.
    Cached by value: `tiny_compiled("gpt2")` and `tiny_compiled("gpt2", "core", device="meta")` are one export."""
    return _compiled(name, level, device, layers, seq)


@functools.cache
def _compiled(name: str, level: str, device: str, layers: int, seq: int) -> Compiled:
    return compile_source(name, tiny=True, layers=layers, seq=seq, level=level, device=device, progress=False)


def tiny_program(name: str, level: str = "core", **shape: int) -> Program:
    """The Program of `tiny_compiled(name, level, **shape)` on the meta device."""
    return tiny_compiled(name, level, **shape).program


def sweep_after_first(names) -> list:
    """`names` as pytest parameters: the first plain, the rest marked `sweep`."""
    first, *rest = names
    return [first, *(pytest.param(name, marks=pytest.mark.sweep) for name in rest)]


def zoo_sweep() -> list:
    """Every zoo name whose tiny `LAYERS`-layer model differs from those before it, as `sweep_after_first` parameters."""
    seen_models: list[tuple] = []
    names = []
    for name in zoo.names():
        entry = zoo.entry(name)
        model = (entry.config_class, entry.model_class, {**entry.full, **entry.tiny, entry.depth_field: LAYERS})
        if model not in seen_models:  # what `zoo.build(name, tiny=True, layers=LAYERS)` configures: not built yet
            seen_models.append(model)
            names.append(name)
    return sweep_after_first(names)
