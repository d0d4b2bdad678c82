"""Core ATen coverage: on torch's OpInfo samples of every `core` operator, the oracle agrees with the rules.

The samples come from torch.testing's op_db (shapes and arguments torch itself tests); the oracle
draws fresh values. One harvest serves every test in this module (about 20 s); the module is
marked `opinfo`, which `make test` runs and `make test-fast` leaves out.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from paths import ROOT

from bwsk.passes.classify.coverage import Sample, core_targets, judge_samples, sample_calls
from bwsk.render.markdown import section_body

pytest.importorskip("expecttest", reason="torch's OpInfo database imports expecttest")
pytestmark = pytest.mark.opinfo

# K verdicts whose witness the oracle's searches do not construct (the reason names the collision).
WITNESS_GAPS = {
    "aten.bitwise_or.Tensor": "bits that are 1 in the other operand",
    "aten.div.Tensor_mode": "maps an interval to one integer",
    "aten.remainder.Tensor": "every divisor larger than |self|",
    "aten.fmod.Tensor": "every divisor larger than |self|",
}


def _load(path: str) -> object:
    spec = importlib.util.spec_from_file_location(path.replace("/", "_").removesuffix(".py"), ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    """The samples are drawn in a thread of their own: torch.testing's sample functions look for the unittest case
    calling them with `inspect.stack()`, which reads the source of every frame, and under pytest the stack is deep
    (the harvest took 4x as long in the test's own thread). A fresh thread's stack holds only the harvest."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ThreadPoolExecutor(max_workers=1) as thread:
            calls = thread.submit(sample_calls).result()
        return judge_samples(calls)


def test_every_rule_is_exercised(samples: list[Sample]) -> None:
    rules = _load("tests/passes/test_classify_rules.py")
    exercised = {s.target for s in samples} | {c.target for c in rules.CASES + rules.UNDRAWABLE} | {u[0] for u in rules.UNKNOWNS}
    assert not sorted(set(core_targets()) - exercised)


def test_no_S_verdict_is_refuted(samples: list[Sample]) -> None:
    refuted = [(s.target, s.operand, s.verdict.reason, s.evidence) for s in samples if s.verdict.kind == "S" and s.confirmed is False]
    assert not refuted


def test_every_K_verdict_has_a_witness(samples: list[Sample]) -> None:
    unwitnessed = [
        (s.target, s.operand, s.verdict.reason, s.evidence)
        for s in samples
        if s.verdict.kind == "K" and s.confirmed is False and WITNESS_GAPS.get(s.target, "\0") not in s.verdict.reason
    ]
    assert not unwitnessed


def test_most_verdicts_are_decided_and_confirmed(samples: list[Sample]) -> None:
    judged = [s for s in samples if s.verdict.kind in ("S", "K")]
    assert sum(s.confirmed is True for s in judged) >= 0.95 * len(judged)


def test_coverage_table_in_docs_is_up_to_date(samples: list[Sample]) -> None:
    script = _load("benchmarks/coverage.py")
    document = (ROOT / "docs" / "analysis.md").read_text()
    table = script.coverage_table(samples)
    assert section_body(document, script.SECTION) == table, "run: python benchmarks/coverage.py"
