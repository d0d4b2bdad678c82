"""`bwsk-compile MODEL --check-classification`: both tables on stdout, exit 0 when nothing is refuted, 1 when something is."""

from __future__ import annotations

import pytest

from bwsk.cli.compile import EXIT_MISMATCH, main
from bwsk.passes.classify.check import ClassificationCheck
from bwsk.passes.classify.phase_check import PhaseCheck


@pytest.mark.sweep
def test_a_tiny_model_is_confirmed_verdict_by_verdict_and_phase_by_phase(capsys):
    assert main(["gpt2", "--tiny", "--layers", "1", "--seq", "8", "--check-classification"]) == 0
    out = capsys.readouterr().out
    assert "numerical check of each S/K verdict" in out and "numerical check of each S-phase as a whole" in out
    assert " 0 failed" in out and "FAILED" not in out


@pytest.mark.slow
def test_failures_count_refuted_verdicts_and_phases(monkeypatch, capsys):
    phase = PhaseCheck(3, "h.0", 4, "%x", "FAILED", "jacobian rank 7/8")
    report = ClassificationCheck("p", [("aten.mul.Tensor", "S", "r", "e", "FAILED"), ("aten.add.Tensor", "S", "r", "e", "ok")], [phase])
    assert report.failures == 2
    monkeypatch.setattr("bwsk.passes.classify.check.check_classification", lambda *a, **k: report)
    monkeypatch.setattr("bwsk.render.classification_check.print_classification_check", lambda report, console: None)
    assert main(["gpt2", "--tiny", "--layers", "1", "--seq", "8", "--check-classification"]) == EXIT_MISMATCH
