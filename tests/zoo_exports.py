"""Tiny zoo models, exported and lowered once per test session (per xdist worker) and shared across test files.

Exporting is most of what a compiler test costs, so tests that do not test a shape use the one
shape here (2 layers, sequence 8, batch 1): each model is then exported once per level and
device, whichever file asks first. A Compiled and its Program are immutable; an Analysis is
not, so each test builds its own (tracing and the passes cost a fraction of the export).

Sweeps over the zoo take `zoo_sweep()`: tiny, the other sizes of an architecture (pythia-160m
... pythia-1b, gpt2-medium) run the same operators in the same definitions as its first model,
so they are marked `slow`: `make test` runs them, `make test-fast` does not.
"""

from __future__ import annotations

import functools

import pytest

from bwsk.frontend import zoo
from bwsk.frontend.compile import Compiled, compile_source
from bwsk.ir.program import Program

LAYERS = 2
SEQ = 8


@functools.cache
def tiny_compiled(name: str, level: str = "core", *, device: str = "meta", layers: int = LAYERS, seq: int = SEQ) -> Compiled:
    """The tiny zoo model `name` lowered at `level`; with device "cpu" it has weights and runs eagerly, with "meta" not."""
    return compile_source(name, tiny=True, layers=layers, seq=seq, level=level, device=device, progress=False)


def tiny_program(name: str, level: str = "core", **shape: int) -> Program:
    """The Program of `tiny_compiled(name, level, **shape)` on the meta device."""
    return tiny_compiled(name, level, **shape).program


def zoo_sweep() -> list:
    """Every zoo name as a pytest parameter; all but the first model of each architecture marked `slow`."""
    seen: set[str] = set()
    names = []
    for name in zoo.names():
        architecture = zoo.entry(name).model_class
        names.append(name if architecture not in seen else pytest.param(name, marks=pytest.mark.slow))
        seen.add(architecture)
    return names
