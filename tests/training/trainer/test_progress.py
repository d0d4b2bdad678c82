"""Progress without a terminal: plain lines on stderr, the first and last step and at most one per LINE_SECONDS between."""

from __future__ import annotations

import pytest

from bwsk.training.trainer import progress
from bwsk.training.trainer.progress import LINE_SECONDS, TrainingProgress


def test_without_a_terminal_a_run_prints_spaced_lines(monkeypatch, capsys):
    clock = iter([0.0, 0.0, 1.0, 2.0, LINE_SECONDS + 3.0, LINE_SECONDS + 4.0, LINE_SECONDS + 5.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with TrainingProgress(6, enabled=None) as bar:  # capsys: stderr is not a terminal
        for step in range(1, 6):
            bar.update(step, loss=2.0 / step, tokens_per_s=1000.0, memory=2**20)
        bar.note("step 5: valid loss 0.5000")
        bar.update(6, loss=0.25, tokens_per_s=1000.0, memory=None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split()[2] for line in lines if line.startswith("training step")] == ["1/6", "4/6", "6/6"]
    assert "loss 2.0000  1,000 tok/s  peak 1 MiB" in lines[0] and "ETA 0:00:00" in lines[-1]
    assert "step 5: valid loss 0.5000" in lines


@pytest.mark.parametrize("enabled", [False, True])
def test_chosen_displays_print_no_lines(enabled, capsys):
    with TrainingProgress(2, enabled=enabled) as bar:
        bar.update(1, loss=1.0, tokens_per_s=1.0, memory=None)
    assert "training step" not in capsys.readouterr().err
