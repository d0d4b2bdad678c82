"""`--check-classification` on architectures nobody here wrote (`benchmarks/outside.py`), at tiny width.

Each model is built from a small transformers config, lowered to Core ATen, and both halves of the
check (every rule application against the oracle, every S-phase as one function) give a verdict
without crashing and without a refuted verdict.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from paths import ROOT


def _load(relative: str):
    spec = importlib.util.spec_from_file_location("outside_bench", ROOT / relative)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


script = _load("benchmarks/outside.py")


@pytest.mark.sweep
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["Qwen2", "Falcon", "RoBERTa", "ConvNeXt", "Whisper encoder"])
def test_outside_architecture_lowers_and_every_verdict_is_confirmed(name):
    outcome = script.run_outside(script.architecture(name))
    assert outcome.error is None, outcome.error
    assert outcome.crash is None, outcome.crash
    assert outcome.verdicts["ok"] > 0 and outcome.phases["ok"] > 0
    assert outcome.verdicts["FAILED"] == 0 and outcome.phases["FAILED"] == 0, outcome.failures
