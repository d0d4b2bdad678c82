"""Pythia-410M at full size on the meta device, without weights: it exports, lowers and renders its 24 layers.

Exporting the full-size model is most of what each check costs, so the module exports it once (batch 1 x 128 tokens,
the defaults) and every test reads that one `Compiled`: its export, its Program, and the graph drawn from the Program.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bwsk.frontend.compile import Compiled, compile_source
from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.passes.analysis import Analysis
from bwsk.passes.manager import PassManager
from bwsk.passes.partition import Partition
from bwsk.render.graph import to_svg

pytestmark = pytest.mark.sweep  # tens of seconds: `make check` (CI) runs it, `make test` and `make test-fast` leave it out


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    return compile_source("pythia-410m", device="meta", progress=False)


def test_full_size_pythia_410m_exports_on_meta(compiled):
    program = compiled.source.program  # the export, before lowering
    (output,) = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
    assert tuple(output.meta["val"].shape) == (1, 128, 50304)


def test_full_size_pythia_410m_lowers_from_the_meta_device_without_weights(compiled):
    assert all(t.device.type == "meta" for t in compiled.state.values())
    program = compiled.program
    assert sum(1 for d in program.defs if d.name.endswith(".branch")) == 24
    assert parse(print_program(program)) == program


def test_full_size_pythia_folds_its_24_layers_into_one_cluster(compiled):
    """Timing of this path is measured by benchmarks/analysis.py, not asserted here."""
    analysis = Analysis.of(compiled.program)
    PassManager([Partition]).run(analysis)
    svg = to_svg(analysis, collapse="layers")
    assert "gpt_neox.layers.0 … gpt_neox.layers.23 (x24, identical)" in svg
    ET.fromstring(svg)
