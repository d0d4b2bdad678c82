"""`bwsk-compile` on hostile or broken inputs: exit 2, one stderr line, no traceback, no output, nothing run.

Also the saved Hugging Face programs a user most often hands over: `torch.export.save` of a
transformers model, with its ModelOutput, lowers and verifies.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import transformers
from frontend.hostile_archives import (
    armed_torch_save,
    patch_declared_size,
    read_members,
    replace_strings,
    save_linear,
    tamper,
    write_members,
    write_remote_code_directory,
)
from zoo_exports import sweep_after_first

from bwsk.cli.compile import main
from bwsk.frontend import zoo
from bwsk.ir.parser import parse

TINY = {"vocab_size": 64, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32}
HF_MODELS = {
    "gpt-neox-parallel": lambda: transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(**TINY, num_hidden_layers=1, use_parallel_residual=True)
    ),
    "gpt-neox-sequential": lambda: transformers.GPTNeoXForCausalLM(
        transformers.GPTNeoXConfig(**TINY, num_hidden_layers=1, use_parallel_residual=False)
    ),
    "mistral": lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(**TINY, num_hidden_layers=1, num_key_value_heads=1, head_dim=16)
    ),
    "opt": lambda: transformers.OPTForCausalLM(
        transformers.OPTConfig(
            vocab_size=64,
            hidden_size=32,
            num_attention_heads=2,
            ffn_dim=64,
            max_position_embeddings=32,
            num_hidden_layers=1,
            word_embed_proj_dim=32,
        )
    ),
}


def save_hf_archive(name: str, path: Path) -> None:
    """What a user does: export the transformers model itself (ModelOutput and all) and save it."""
    torch.manual_seed(0)
    model = HF_MODELS[name]().eval()
    ids = torch.randint(0, 64, (1, 8))
    torch.export.save(torch.export.export(model, (ids,), {"use_cache": False}), path)


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused_in_one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", sweep_after_first(name for name in HF_MODELS if name != "gpt-neox-parallel")
)  # that one: in a fresh process below
def test_saved_hugging_face_programs_lower_and_verify(tmp_path, capsys, name):
    archive = tmp_path / f"{name}.pt2"
    save_hf_archive(name, archive)
    code, out, err = run([archive, "--verify", "-o", tmp_path / "out.bwsk"], capsys)
    assert code == 0, err
    assert f"verify {archive.name}: ok" in err
    assert parse((tmp_path / "out.bwsk").read_text()).inputs[0].type.shape == (1, 8)


@pytest.mark.sweep
def test_a_saved_hugging_face_program_loads_in_a_fresh_process(tmp_path):
    """No transformers module is imported when the archive is read: bwsk registers the output type itself."""
    archive = tmp_path / "neox.pt2"
    save_hf_archive("gpt-neox-parallel", archive)
    result = subprocess.run(
        [sys.executable, "-m", "bwsk.cli.compile", str(archive), "--verify", "-o", str(tmp_path / "out.bwsk")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"verify {archive.name}: ok: 1 output(s), max abs error 0, max relative error 0 (tolerance 1e-05)"
    ]


def armed_sample_inputs(honest: Path, path: Path, marker: Path) -> None:
    tamper(honest, path, lambda m: {**m, "model/data/sample_inputs/model.pt": armed_torch_save(marker)})


def injected_name(honest: Path, path: Path, marker: Path) -> None:
    payload = f"x=open({str(marker)!r}, 'w'), *rest"
    text = json.loads(read_members(honest)["model/models/model.json"])
    tamper(honest, path, lambda m: {**m, "model/models/model.json": json.dumps(replace_strings(text, "x", payload)).encode()})


def declared_bomb(honest: Path, path: Path, marker: Path) -> None:
    write_members(path, {**read_members(honest), "model/extra/zeros": bytes(1000)}, zipfile.ZIP_DEFLATED)
    patch_declared_size(path, "model/extra/zeros", 4_000_000_000)


def corrupt_stream(honest: Path, path: Path, marker: Path) -> None:
    write_members(path, {**read_members(honest), "model/extra/text": b"abc" * 5000}, zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model/extra/text")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename)
    data[start + 4 : start + 40] = bytes(36)
    path.write_bytes(bytes(data))


def truncated(honest: Path, path: Path, marker: Path) -> None:
    path.write_bytes(honest.read_bytes()[:-100])


@pytest.mark.parametrize("build", [armed_sample_inputs, injected_name, declared_bomb, corrupt_stream, truncated])
def test_hostile_archives_are_refused(tmp_path, capsys, build):
    honest, path, marker, out_file = tmp_path / "model.pt2", tmp_path / "hostile.pt2", tmp_path / "marker", tmp_path / "out.bwsk"
    save_linear(honest)
    build(honest, path, marker)
    code, out, err = run([path, "--verify", "-o", out_file], capsys)
    assert "hostile.pt2" in refused_in_one_line(code, err)
    assert out == "" and not out_file.exists() and not marker.exists()


@pytest.mark.sweep
def test_a_directory_with_its_own_code_never_prompts(tmp_path):
    """Even answering `y` on stdin runs nothing: the directory is refused before transformers reads it."""
    marker = tmp_path / "marker"
    write_remote_code_directory(tmp_path / "evil", marker)
    result = subprocess.run(
        [sys.executable, "-m", "bwsk.cli.compile", str(tmp_path / "evil"), "--tiny"], input="y\ny\n", capture_output=True, text=True
    )
    assert result.stdout == "" and not marker.exists()
    assert "--trust-remote-code" in refused_in_one_line(result.returncode, result.stderr)


@pytest.mark.slow
def test_transformers_output_stays_off_stderr(tmp_path, capfd):
    model = zoo.build("pythia-70m", tiny=True, layers=1, device="cpu", seed=3)
    model.save_pretrained(tmp_path / "pythia")
    capfd.readouterr()
    code = main([str(tmp_path / "pythia"), "--seq", "8", "-o", str(tmp_path / "out.bwsk")])
    out, err = capfd.readouterr()
    assert code == 0 and out == "" and err == ""
    type(model).from_pretrained(tmp_path / "pythia")
    assert capfd.readouterr().err != "", "transformers alone does write to stderr here"


@pytest.mark.parametrize("spec", ["./no/such/model", "models/pythia", "no-such.pt2", "/proc/self/mem"])
def test_missing_or_unreadable_paths_are_one_line(tmp_path, capsys, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    code, out, err = run([spec], capsys)
    assert spec in refused_in_one_line(code, err) and out == ""
