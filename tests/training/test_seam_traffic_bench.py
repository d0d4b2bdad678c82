"""benchmarks/seam_traffic.py at a small size: both rows counted, the fused seams move fewer stream passes, JSON kept."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from paths import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("seam_traffic_bench", ROOT / "benchmarks" / "seam_traffic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.interpreter
def test_fused_seams_save_stream_passes_and_the_json_is_not_overwritten(bench, tmp_path, capsys):
    out = tmp_path / "traffic.json"
    argv = ["--model", "pythia-70m", "--layers", "2", "--seq", "8", "--json", str(out)]
    assert bench.main(argv) == 0
    rows = {row["seams"]: row for row in json.loads(out.read_text())["rows"]}
    eager, fused = rows["torch"], rows["triton"]
    assert (eager["fused_norms"], fused["fused_norms"]) == (0, 4)
    assert eager["triton_launches"] == 0 and fused["triton_launches"] == 12  # 2 blocks x (2 forward + 2 rebuild + 2 norm backward)
    assert fused["stream_bytes"] < eager["stream_bytes"] and fused["total_bytes"] < eager["total_bytes"]
    assert "stream passes per block" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        bench.main(argv)
    assert refused.value.code == 2 and "already exists" in capsys.readouterr().err
