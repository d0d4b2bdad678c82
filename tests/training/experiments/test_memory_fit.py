"""What fits a budget: each answer's measured peak fits and the next size up does not (or the answer is the cap)."""

from __future__ import annotations

import random

import pytest
from benchmark_script import benchmark
from training.tiny_models import tiny_model

from bwsk.training.experiments import fit_report
from bwsk.training.experiments.memory_fit import fit_model, largest_fitting
from bwsk.training.modes.fake_step import measure_step
from bwsk.training.trainer.optimizer_in_backward import OptimizerInBackward

CAP, UNIT, FIT_SEQ = 256, 16, 32


def _piecewise(size: int) -> int:
    """A step peak's shape: the larger of a quadratic (activations, scores) and a linear term (the optimizer step)."""
    return max(1000 + 40 * size + size * size // 3, 9000 + 90 * size)


def test_search_finds_the_largest_fitting_size_of_a_piecewise_peak():
    generator = random.Random(0)
    sizes = range(UNIT, CAP + 1, UNIT)
    for budget in [generator.randrange(_piecewise(UNIT) - 500, _piecewise(CAP) + 500) for _ in range(40)]:
        calls: list[int] = []
        size, capped, measured = largest_fitting(
            lambda n, calls=calls: calls.append(n) or _piecewise(n), budget, start=64, unit=UNIT, cap=CAP, degree=2, known={}
        )
        expected = max((n for n in sizes if _piecewise(n) <= budget), default=None)
        assert size == expected and capped == (expected == CAP)
        assert measured == len(calls) == len(set(calls)) <= 8
        assert size is None or size in calls
        assert capped or (size or 0) + UNIT in calls  # the next size up was measured


@pytest.mark.sweep  # ~15-20 s: 12 fake steps of about 1.3 s each, whatever the size
def test_fits_of_a_tiny_model_are_measured_to_fit_and_the_next_size_up_not():
    config = tiny_model("llama", layers=1, use_cache=False, max_position_embeddings=CAP).config
    variant = {"chunked": True, "optimizer_in_backward": OptimizerInBackward}

    def peak(batch: int, seq: int) -> int:
        return measure_step(config, "reversible", batch=batch, seq=seq, **variant).peak_bytes

    low, top = peak(1, UNIT), peak(1, CAP)
    budgets = [low - 1, (3 * low + top) // 4, 2 * top]
    fits, steps = fit_model(
        config,
        "tiny",
        budgets=budgets,
        dtype=None,
        modes=["reversible"],
        variants=["chunked + opt. in backward"],
        cap=CAP,
        seq_unit=UNIT,
        fit_seq=FIT_SEQ,
    )
    assert [(f.axis, f.budget) for f in fits] == [(axis, b) for axis in ("seq", "batch") for b in budgets]
    measured = {(s.batch, s.seq): s.peak_bytes for s in steps}
    assert sum(f.measurements for f in fits) == len(steps) == len(measured)
    for fit in fits:
        at = (lambda n: measured[1, n]) if fit.axis == "seq" else (lambda n: measured[n, FIT_SEQ])
        if fit.size is not None:
            assert fit.peak == at(fit.size) <= fit.budget
        if fit.capped:
            assert fit.axis == "seq" and fit.size == CAP
        else:
            assert fit.above_peak == at((fit.size or 0) + fit.unit) > fit.budget
    by_budget = {(f.axis, f.budget): f for f in fits}
    batch = by_budget["batch", budgets[1]]  # measured again, outside the search: the search measured with its settings
    assert batch.peak <= batch.budget < peak(batch.size + 1, FIT_SEQ) == batch.above_peak
    assert by_budget["seq", budgets[0]].size is None  # not even UNIT tokens fit
    assert UNIT <= by_budget["seq", budgets[1]].size < CAP and not by_budget["seq", budgets[1]].capped
    assert by_budget["seq", budgets[2]].capped
    assert fit_report.answer(by_budget["seq", budgets[2]]) == f"≥ {CAP}"


def test_the_fit_section_is_replaced_alone():
    document = "# Title\n\nintro\n\n## Depth\n\nkept\n"
    first = fit_report.with_section(document, f"{fit_report.SECTION_HEADING}\n\nold\n", "# Title")
    second = fit_report.with_section(first + "\n## Later\n\nalso kept\n", f"{fit_report.SECTION_HEADING}\n\nnew\n", "# Title")
    assert first.startswith(document) and "old" in first
    assert "old" not in second and "new" in second and second.startswith(document) and second.endswith("## Later\n\nalso kept\n")


def _benchmark():
    return benchmark("memory")


def test_fit_without_fake_is_refused_in_one_line(capsys):
    assert _benchmark().main(["--fit", "24GiB"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--fake" in error and error.count("\n") == 0


@pytest.mark.parametrize("sizes", ["12XB", "24GB", "0GiB", "GiB", "24GiB,,48GiB"])
def test_a_bad_budget_is_refused_in_one_line(sizes, capsys):
    with pytest.raises(SystemExit) as exit:
        _benchmark().main(["--fake", "--fit", sizes])
    error = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and "--fit" in error and error.count("\n") == 0
