"""benchmarks/kernels.py without a GPU: every seam checked against torch under the interpreter; the plot from records."""

from __future__ import annotations

import re

import pytest
import torch
from benchmark_script import benchmark


@pytest.fixture(scope="module")
def bench():
    return benchmark("kernels")


@pytest.mark.sweep
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path runs only without CUDA")
def test_cpu_run_checks_every_seam_and_says_timings_need_a_gpu(bench, capsys):
    assert bench.main([]) == 0
    out = capsys.readouterr().out
    assert "timings need a GPU" in out
    errors = {(m[0], m[1], m[2]): float(m[3]) for m in re.findall(r"(\w+)\s+([\w-]+) d=(\d+) .*: ([0-9.e+-]+)$", out, re.MULTILINE)}
    expected = {
        (norm, seam, str(width)) for norm in bench.NORMS for seam in ("forward", "rebuild", "norm-backward") for width in (1024, 2048)
    }
    assert set(errors) == expected
    assert max(errors.values()) < 1e-4


@pytest.mark.sweep
def test_plot_draws_every_seam_and_refuses_to_overwrite(bench, tmp_path):
    records = [
        {"norm": norm, "seam": seam, "width": width, "rows": rows, **{f"{name}_of_copy": 0.5 for name in ("triton", "compile", "eager")}}
        for norm in bench.NORMS
        for seam in bench.SEAMS
        for width in bench.WIDTHS.values()
        for rows in (1024, 2048)
    ]
    path = tmp_path / "kernels.png"
    bench.plot(records, str(path), force=False)
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(Exception, match="exists"):
        bench.plot(records, str(path), force=False)
