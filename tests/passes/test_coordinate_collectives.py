"""The coordinate pass against torch: the collectives DTensor issues for one tensor-parallel or sequence-sharded layer.

Counted on a fake process group of two ranks in this process (`benchmarks/collectives.py`), tiny widths.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import sys
import warnings
from collections import Counter

import pytest
import torch.distributed as dist

from bwsk.render.markdown import section_body

ROOT = pathlib.Path(__file__).parents[2]
SEQ = 16


def _load(relative: str):
    spec = importlib.util.spec_from_file_location(pathlib.Path(relative).stem, ROOT / relative)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


script = _load("benchmarks/collectives.py")
FAMILIES = {family.family: family for family in script.FAMILIES}
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook")  # CommDebugMode's module tracker on a leaf input


@functools.cache
def predicted(family: str):
    return script.predicted(FAMILIES[family], SEQ)


@pytest.fixture(scope="module")
def mesh():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with script.fake_world(2) as made:
            yield made
    assert not dist.is_initialized()  # the fake group is torn down for the tests that follow


@pytest.mark.slow
@pytest.mark.parametrize("family", ["GPT-NeoX", pytest.param("Llama", marks=pytest.mark.sweep)])
def test_tensor_parallel_collectives_are_the_ones_the_pass_predicts(family, mesh):
    expected = predicted(family)
    found = script.counted(FAMILIES[family], "hidden", mesh, SEQ)
    assert found["forward"] == expected["hidden", "forward"] == Counter({"all-reduce": 2})  # after attention, after the MLP
    column_parallel = len(FAMILIES[family].colwise)  # DTensor all-reduces the input gradient of each
    assert found["backward"] == expected["hidden", "backward"] == Counter({"all-reduce": column_parallel})


@pytest.mark.slow
@pytest.mark.parametrize("family", ["GPT-NeoX", pytest.param("Llama", marks=pytest.mark.sweep)])
def test_sequence_sharding_gathers_keys_and_values_forward_as_predicted(family, mesh):
    expected = predicted(family)
    found = script.counted(FAMILIES[family], "sequence", mesh, SEQ)
    assert found["forward"] == expected["sequence", "forward"] == Counter({"all-gather": 2})
    assert expected["sequence", "backward"] == Counter({"reduce-scatter": 2})  # the gradients of the gathered keys, values
    assert found["backward"]["all-gather"] > 2  # DTensor's propagation gathers instead (documented in docs/analysis.md)


@pytest.mark.sweep
def test_the_docs_table_is_the_one_the_script_writes():
    """Cheap consistency check: the predicted column of every row equals the pass now (counting is the slow part)."""
    document = (ROOT / "docs" / "analysis.md").read_text()
    section = section_body(document, script.SECTION)
    assert section is not None, "run: python benchmarks/collectives.py"
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(script.FAMILIES) * len(script.AXES) * len(script.DIRECTIONS)
    for family in script.FAMILIES:
        expected = predicted(family.family)
        mine = [row for row in rows if row[0] == f"| {family.family}"]
        assert {(row[2], row[3]): row[4] for row in mine} == {key: script.spell(counts) for key, counts in expected.items()}
        assert all(row[6] == ("yes |" if row[4] == row[5] else "no |") for row in mine)
    assert script.ASSUMPTIONS.strip() in section
