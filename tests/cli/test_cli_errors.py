"""Bad command lines and absurd sizes: exit 2, one escaped and shortened stderr line, no traceback, no output.

Also: a SIGTERM while an output is being written leaves no temporary behind and the old file intact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers

from bwsk.atomic import write_atomic
from bwsk.cli import demo
from bwsk.cli.compile import main
from bwsk.errors import MAX_MESSAGE, MAX_RUN, BwskError, one_line
from bwsk.frontend import size_limits, zoo

IR_TEXT = 'program "tiny" level="hand"\n\ninput %x : f32[2]\n\n%y : f32[2] = aten.relu.default(_) %x\n\noutput %y : f32[2]\n'
TINY_NEOX = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": 64, "hidden_size": 32}
TINY_NEOX |= {"num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": 1}


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run bwsk-compile in-process; assert exit 2, nothing on stdout and exactly one stderr line; return it."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse errors leave through sys.exit
        code = stop.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and err.endswith("\n"), err
    assert out == "" and "Traceback" not in err and "internal error" not in err
    assert lines[0].isprintable(), lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".bwsk-"))


def hf_directory(folder: Path, **config: object) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_NEOX | config))
    return folder


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pythia-70m", "--seq", "-1"], "argument --seq: expected a whole number from 1"),
        (["pythia-70m", "--batch", "-1"], "argument --batch: expected a whole number from 1"),
        (["pythia-70m", "--batch", "0"], "argument --batch"),
        (["pythia-70m", "--seq", "1e3"], "got '1e3'"),
        (["pythia-70m", "--layers", "0"], "argument --layers"),
        (["pythia-70m", "--layers", "9" * 5000], "below 10**18"),
        (["model.pt", "--input-shape", "1x-3"], "argument --input-shape: bad input shape '1x-3': negative dimension"),
        (["model.pt", "--input-shape", "1xfour"], "argument --input-shape: bad input shape '1xfour'"),
        (["model.pt", "--input-shape", "1x2:q8"], "unknown dtype 'q8'"),
        (["pythia-70m", "--emit", "nope"], "argument --emit: invalid choice: 'nope'"),
        (["pythia-70m", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        ([], "the following arguments are required: INPUT"),
    ],
)
def test_a_bad_argument_is_one_line_pointing_to_help(tmp_path, capsys, argv, expected):
    line = refused([*argv, "-o", tmp_path / "out.bwsk"], capsys)
    assert line.startswith("bwsk-compile: error: ") and expected in line
    assert line.endswith("(see bwsk-compile --help)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.sweep
def test_the_console_entry_reports_an_argparse_error_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bwsk.cli.compile", "pythia-70m", "--batch", "-1", "-o", str(tmp_path / "out.bwsk")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "bwsk-compile: error: argument --batch: expected a whole number from 1 to below 10**18, got '-1' (see bwsk-compile --help)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.sweep
def test_an_input_shape_the_model_rejects_is_one_line_without_torch_logs(tmp_path):
    torch.save(torch.nn.Linear(4, 4), tmp_path / "linear.pt")
    result = subprocess.run(
        [sys.executable, "-m", "bwsk.cli.compile", str(tmp_path / "linear.pt"), "--trust-pickle", "--input-shape", "2x5"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("cannot export linear.pt: RuntimeError: "), result.stderr


@pytest.mark.parametrize("argv", [["--layers", "0"], ["--seq", "-1"], ["--model", "no-such-model"], ["--bogus"]])
def test_the_demo_reports_a_bad_argument_in_one_line(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        demo.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("bwsk-demo: error: ")


def test_a_billion_zoo_layers_are_refused_before_any_config_is_built(tmp_path, capsys, monkeypatch):
    def never(**_: object) -> None:
        raise AssertionError("the config was built")

    monkeypatch.setattr(transformers, "GPTNeoXConfig", never)
    line = refused(["pythia-70m", "--layers", "1000000000", "-o", tmp_path / "out.bwsk"], capsys)
    assert line.startswith("refusing to build pythia-70m: 1,000,000,000 layers, about ")
    assert "parameters (" in line and "bytes at float32)" in line and f"at most {size_limits.MAX_LAYERS:,} layers" in line
    assert list(tmp_path.iterdir()) == []


def test_a_billion_layers_in_a_config_json_are_refused_before_transformers_reads_it(tmp_path, capsys, monkeypatch):
    def never(*_: object, **__: object) -> None:
        raise AssertionError("transformers read the config")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", never)
    model = hf_directory(tmp_path / "model", num_hidden_layers=10**9)
    line = refused([model, "-o", tmp_path / "out.bwsk"], capsys)
    assert line.startswith(f"refusing to build {model}: 1,000,000,000 layers, about ")
    assert not (tmp_path / "out.bwsk").exists()


def test_a_model_larger_than_memory_is_refused_on_a_real_device_only(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(size_limits, "physical_memory", lambda: 2**30)
    line = refused(["pythia-1b", "--verify", "-o", tmp_path / "out.bwsk"], capsys)
    assert line.startswith("refusing to build pythia-1b on cpu: 16 layers, about ")
    assert line.endswith("bytes at float32); more than this machine's 1.07e+9 bytes of memory")
    size_limits.check_model_size(zoo.entry("pythia-1b").full, "pythia-1b", device="meta")
    assert list(tmp_path.iterdir()) == []


def test_example_inputs_larger_than_memory_are_refused_before_allocating(tmp_path, capsys):
    argv = ["pythia-70m", "--tiny", "--layers", "1", "--seq", "4", "--batch", 10**14, "--verify", "-o", tmp_path / "out.bwsk"]
    line = refused(argv, capsys)
    assert line.startswith("example input of shape 100000000000000x4: 3.20e+15 bytes; more than this machine's ")


@pytest.mark.slow
def test_size_estimates_bound_the_zoo_models_from_below():
    for name in zoo.names():
        spec = zoo.entry(name)
        if spec.config_class == "ResNetConfig":
            continue
        for tiny in (False, True):
            values = {**spec.full, **(spec.tiny if tiny else {}), spec.depth_field: 2}
            parameters = sum(p.numel() for p in zoo.build(name, tiny=tiny, layers=2).parameters())
            estimate = size_limits.estimate(values)
            assert estimate.layers == 2
            assert estimate.parameters <= parameters <= 2.5 * estimate.parameters, (name, parameters, estimate)


def test_the_estimate_counts_nested_configs_and_ignores_what_is_not_a_size():
    text = {"vocab_size": 10, "hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 2}
    vision = {"hidden_size": 2, "num_hidden_layers": 3}
    assert size_limits.estimate(text).parameters == 10 * 4 + 2 * (4 * 16 + 2 * 4 * 8)
    both = size_limits.estimate({"text_config": text, "vision_config": vision, "num_hidden_layers": True})
    assert both.layers == 5 and both.parameters == 10 * 4 + 2 * (4 * 16 + 2 * 4 * 8) + 3 * (4 * 4 + 2 * 2 * 8)
    assert size_limits.estimate({"num_hidden_layers": "1e9", "hidden_size": -5, "n_layer": 2.5}).layers == 0


def test_error_text_is_escaped(tmp_path, capsys):
    line = refused(["no\nsuch\x1b[31m-model", "-o", tmp_path / "out.bwsk"], capsys)
    assert "\x1b" not in line and "\\x1b[31m" in line and "no\\nsuch" in line


def test_a_located_error_escapes_the_file_name(tmp_path, capsys):
    source = tmp_path / "bad\n\x1b]0;title\x07.bwsk"
    source.write_text("program oops\n")
    line = refused([source], capsys)
    assert line.startswith(f"{tmp_path}/bad\\n\\x1b]0;title\\x07.bwsk:1:")


@pytest.mark.slow
def test_a_50_mb_argument_is_shortened(tmp_path, capsys):
    huge = "x" * 50_000_000
    line = refused([huge, "-o", tmp_path / "out.bwsk"], capsys)
    assert len(line) < MAX_MESSAGE and line.count("x") < MAX_RUN and ",999,8" in line and "characters left out" in line


def test_one_line_cuts_long_runs_and_long_text_in_the_middle_and_is_idempotent():
    path = "/data/" + "d" * 1000 + "/model.pt2"
    shortened = one_line(f"{path}: corrupt archive\n")
    assert shortened.startswith("/data/ddd") and shortened.endswith("/model.pt2: corrupt archive")
    assert len(shortened) < MAX_RUN + 60
    words = one_line(" ".join(["word"] * 1000))
    assert words.startswith("word word") and words.endswith("word word") and "characters left out" in words
    assert len(words) < MAX_MESSAGE + 60
    for text in (shortened, words, one_line("tab\there\x1b[0m\u202e")):
        assert one_line(text) == text
    assert one_line("tab\there\x1b[0m\u202e") == "tab\\there\\x1b[0m\\u202e"


def test_a_bwsk_error_renders_one_printable_line():
    error = BwskError("line one\nline two\r\x1b[2J", hint="see\x07 this")
    assert error.render() == "line one\\nline two\\r\\x1b[2J (see\\x07 this)"


def test_an_internal_error_is_one_escaped_line(capsys, monkeypatch):
    def broken(_args: object) -> int:
        raise RuntimeError("first \x1b[31mline\nsecond line")

    monkeypatch.setattr("bwsk.cli.compile.run", broken)
    assert main(["pythia-70m"]) == 3
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["bwsk-compile: internal error: RuntimeError: first \\x1b[31mline (set BWSK_DEBUG=1 for a traceback)"]


def test_a_bad_output_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    def never(_args: object) -> None:
        raise AssertionError("the model was compiled")

    monkeypatch.setattr("bwsk.cli.compile.compile_model", never)
    (tmp_path / "taken.bwsk").write_text("mine")
    assert "already exists" in refused(["pythia-70m", "-o", tmp_path / "taken.bwsk"], capsys)
    assert "does not exist" in refused(["pythia-70m", "-o", tmp_path / "missing" / "out.bwsk"], capsys)
    assert (tmp_path / "taken.bwsk").read_text() == "mine"


# A write that stalls once its data is in the temporary file, so that a signal arrives mid-write.
STALLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    def stalled_fsync(fd):
        print("writing", flush=True)
        time.sleep(120)
    os.fsync = stalled_fsync
    from bwsk.cli.compile import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.sweep
@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new"])
def test_sigterm_during_a_write_leaves_no_temporary_and_the_old_file(tmp_path, existing):
    source, output = tmp_path / "in.bwsk", tmp_path / "out" / "out.bwsk"
    source.write_text(IR_TEXT)
    output.parent.mkdir()
    if existing:
        output.write_text("old")
    writer = subprocess.Popen(
        [sys.executable, "-c", STALLED_WRITER, str(source), "-o", str(output), "--force"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline() == "writing\n", writer.stderr.read()
        assert len(leftovers(output.parent)) == 1
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(timeout=60) == -signal.SIGTERM
    finally:
        writer.kill()
        writer.communicate()
    assert leftovers(output.parent) == []
    assert (output.read_text() == "old") if existing else not output.exists()


def test_a_signal_mid_write_reaches_the_previous_handler_after_the_cleanup(tmp_path, monkeypatch):
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        monkeypatch.setattr(os, "fsync", lambda _fd: os.kill(os.getpid(), signal.SIGTERM))
        (tmp_path / "out.txt").write_text("old")
        with pytest.raises(BwskError, match="interrupted by SIGTERM before the output was written"):
            write_atomic(str(tmp_path / "out.txt"), "new", force=True)
        assert signal.getsignal(signal.SIGTERM) is not None and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert leftovers(tmp_path) == [] and (tmp_path / "out.txt").read_text() == "old"
