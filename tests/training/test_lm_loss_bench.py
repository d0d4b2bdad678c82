"""benchmarks/lm_loss.py at small sizes: the rows, the exact bytes of the inputs, agreement, JSON kept, one-line errors.

The liger row is there exactly when liger_kernel is installed (the optional `liger` extra); its Triton kernels then
run in the interpreter (tests/conftest.py sets TRITON_INTERPRET=1 without CUDA), hence the `interpreter` mark.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from benchmark_script import benchmark

LIGER = importlib.util.find_spec("liger_kernel") is not None
FP32_LOSS, FP32_GRAD = 1e-5, 1e-6  # absolute; measured at most 5e-7 (loss) and 2e-8 (gradients)


@pytest.fixture(scope="module")
def bench():
    return benchmark("lm_loss")


def input_bytes(tokens: int, hidden: int, vocab: int) -> dict[str, int]:
    """What MemTracker must count as the head's weight (fp32) and as Other: the hidden states (fp32), labels (int64)."""
    return {"Parameter": vocab * hidden * 4, "Other": tokens * hidden * 4 + tokens * 8}


@pytest.mark.sweep
@pytest.mark.interpreter
def test_real_rows_agree_with_the_full_logits_and_the_json_is_not_overwritten(bench, tmp_path, capsys):
    tokens, hidden, vocab = 300, 8, 256  # 300 tokens: bwsk's default chunk (256 tokens) splits them
    out = tmp_path / "lm_loss.json"
    argv = ["--tokens", str(tokens), "--hidden", str(hidden), "--vocab", str(vocab), "--json", str(out)]
    assert bench.main(argv) == 0
    document = json.loads(out.read_text())
    shape = ("tokens", "hidden", "vocab", "dtype", "fake", "chunk_tokens", "device")
    assert tuple(document[key] for key in shape) == (tokens, hidden, vocab, "fp32", False, None, "cpu")
    rows = {row["loss"]: row for row in document["rows"]}
    assert list(rows) == ["full", "chunked", *(["liger"] if LIGER else [])]
    for row in rows.values():
        assert row["peak_bytes"] == sum(row["peak_by_category"].values())  # the categories shown hold every byte
        assert input_bytes(tokens, hidden, vocab).items() <= row["peak_by_category"].items()
        assert row["max_loss_difference"] <= FP32_LOSS
        assert max(row["max_hidden_grad_difference"], row["max_weight_grad_difference"]) <= FP32_GRAD
    full = rows["full"]
    assert full["max_loss_difference"] == full["max_hidden_grad_difference"] == full["max_weight_grad_difference"] == 0.0
    assert rows["chunked"]["peak_bytes"] < full["peak_bytes"] and rows["chunked"]["peak_by_category"]["Activation"] < tokens * vocab * 4
    assert ("interpreter" in " ".join(document["notes"])) == LIGER
    printed = capsys.readouterr().out
    assert "| full: full logits + torch cross-entropy |" in printed and ("| liger: " in printed) == LIGER
    before = out.read_text()
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.strip().count("\n") == 0 and out.read_text() == before


@pytest.mark.sweep
def test_fake_size_measures_full_and_chunked_only(bench, tmp_path, capsys):
    tokens, hidden, vocab = 2048, 256, 32000
    out, smaller = tmp_path / "fake.json", tmp_path / "fake-64.json"
    argv = ["--fake", "--tokens", str(tokens), "--hidden", str(hidden), "--vocab", str(vocab)]
    assert bench.main([*argv, "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert (document["dtype"], document["fake"]) == ("bf16", True)
    full, chunked = document["rows"]
    assert (full["loss"], chunked["loss"]) == ("full", "chunked")
    for row in (full, chunked):
        assert row["loss_value"] is None and row["max_loss_difference"] is None  # fake tensors have no values
        assert row["peak_bytes"] == sum(row["peak_by_category"].values())
        assert input_bytes(tokens, hidden, vocab).items() <= row["peak_by_category"].items()
    assert full["peak_by_category"]["Activation"] >= tokens * vocab * 2  # the bf16 logits, at least
    assert chunked["peak_bytes"] < full["peak_bytes"] / 2
    assert "fake tensors" in " ".join(document["notes"]) and "FakeTensorMode" in capsys.readouterr().out
    assert bench.main([*argv, "--chunk-tokens", "64", "--json", str(smaller)]) == 0
    small_chunks = json.loads(smaller.read_text())
    assert small_chunks["chunk_tokens"] == 64 and small_chunks["rows"][0] == full
    assert small_chunks["rows"][1]["peak_bytes"] < chunked["peak_bytes"]  # the default chunk here: 256 tokens


def test_bad_arguments_are_refused_in_one_line(bench, capsys):
    assert bench.main(["--tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert "--tokens must be at least 2" in err and err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as stop:
        bench.main(["--dtype", "fp16"])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err
