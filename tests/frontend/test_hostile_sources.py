"""Hostile archives and Hugging Face directories: each is refused in one line and nothing in it runs.

Each armed input is also handed to the unguarded library call (torch.export.load, an import)
where that is cheap, proving that the payload is live and that the refusal is what stopped it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from frontend.hostile_archives import (
    armed_pickle,
    armed_torch_save,
    edit_json,
    patch_declared_size,
    read_members,
    replace_strings,
    root_of,
    save_dynamic,
    save_linear,
    tamper,
    write_members,
    write_remote_code_directory,
)
from frontend.hostile_folders import HOSTILE_FOLDERS, edit_json_file, redirect_config

from bwsk.errors import SourceError
from bwsk.frontend import archive_check, hf_outputs, sources, zoo
from bwsk.frontend.hf_files import read_config


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("honest") / "model.pt2"
    save_linear(path)
    return path


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dynamic") / "model.pt2"
    save_dynamic(path)
    return path


def refused(path: Path, match: str, **options) -> str:
    with pytest.raises(SourceError, match=match) as caught:
        sources.load_exported(path, **options)
    message = str(caught.value)
    assert "\n" not in message and path.name in message
    return message


def test_the_honest_archive_loads(honest):
    program, inputs = sources.load_exported(honest)
    assert inputs[0].shape == (2, 3)
    assert program.module()(*inputs).shape == (2, 2)


def with_member(name_tail: str, data: bytes):
    return lambda members: {**members, f"{root_of(members)}/{name_tail}": data}


PICKLE_PLACES = {
    "sample inputs": lambda m, armed: {**m, "model/data/sample_inputs/model.pt": armed},
    "an extra file": lambda m, armed: with_member("extra/notes.txt", armed)(m),
    "a weight marked use_pickle": lambda m, armed: {
        **edit_json(m, "model_weights_config.json", lambda c: c["config"]["linear.weight"].update(use_pickle=True)),
        "model/data/weights/weight_0": armed,
    },
    "the legacy weights member": lambda m, armed: {
        **{k: v for k, v in m.items() if "data/weights/" not in k},
        "model/data/weights/model.pt": armed,
    },
}
# torch reads extra files as text, so only a pickle recognisable by its bytes is one there.
PICKLE_CASES = [
    (where, form) for where in PICKLE_PLACES for form in ("torch.save", "protocol-0") if (where, form) != ("an extra file", "protocol-0")
]


@pytest.mark.parametrize(("where", "form"), PICKLE_CASES)
def test_armed_pickles_anywhere_are_refused_unless_trusted(tmp_path, honest, where, form):
    marker = tmp_path / "marker"
    armed = armed_torch_save(marker) if form == "torch.save" else armed_pickle(marker, protocol=0)
    path = tamper(honest, tmp_path / "tampered.pt2", lambda m: PICKLE_PLACES[where](m, armed))
    refused(path, "weights-only")
    assert not marker.exists()
    if where != "an extra file":
        with contextlib.suppress(Exception):
            torch.export.load(path)
        assert marker.exists(), "the payload is live: torch.export.load runs it"


def test_the_flat_layout_of_older_torch_is_judged_too(tmp_path):
    marker = tmp_path / "marker"
    legacy = {
        "version": b"8.0",
        "serialized_exported_program.json": b"{}",
        "serialized_state_dict.pt": b"",
        "serialized_constants.pt": b"",
        "serialized_example_inputs.pt": armed_torch_save(marker),
    }
    write_members(tmp_path / "old.pt2", legacy)
    refused(tmp_path / "old.pt2", "serialized_example_inputs.pt.*weights-only")
    write_members(tmp_path / "odd.pt2", {**legacy, "serialized_example_inputs.pt": b"", "payload.py": b"x"})
    refused(tmp_path / "odd.pt2", "payload.py.*not part of a torch.export archive")
    assert not marker.exists()


def test_opaque_objects_are_refused_unless_trusted(tmp_path, honest):
    def opaque(members):
        members = edit_json(
            members,
            "model_constants_config.json",
            lambda c: c["config"].update(
                {"obj": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}
            ),
        )
        return {**members, "model/data/constants/opaque_obj_0": armed_pickle(tmp_path / "marker")}

    path = tamper(honest, tmp_path / "opaque.pt2", opaque)
    refused(path, "opaque pickled object.*--trust-pickle")
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: list(m.items()) + [("model/extra/a.txt", b"1"), ("model/extra/a.txt", b"2")], "occurs twice"),
        (lambda m: {**m, "model/Data/Sample_Inputs/model.pt": b"", "model/data/sample_inputs/Model.pt": b""}, "differ only in case"),
        (with_member("../evil.pt", b"x"), "invalid archive member name"),
        (lambda m: {**m, "/etc/evil": b"x"}, "invalid archive member name"),
        (with_member("extra\\evil", b"x"), "invalid archive member name"),
        (with_member("extra/ok\x1b[31m", b"x"), "invalid archive member name"),
        (lambda m: {**m, "elsewhere/extra/x": b"x"}, "outside one top folder"),
        (with_member("notes.txt", b"x"), "not part of a torch.export archive"),
        (with_member("data/aotinductor/model/model.so", b"\x7fELF"), "compiled code"),
        (
            lambda m: {k: v for k, v in m.items() if not k.endswith("sample_inputs/model.pt")},
            "member data/sample_inputs/model.pt is missing",
        ),
    ],
    ids=["duplicate", "case", "traversal", "absolute", "backslash", "escape-codes", "two-roots", "unknown", "aotinductor", "missing"],
)
def test_structure_torch_and_python_could_disagree_about_is_refused(tmp_path, honest, change, match):
    refused(tamper(honest, tmp_path / "odd.pt2", change), match)


def test_names_in_the_program_text_cannot_inject_code(tmp_path, honest):
    marker = tmp_path / "marker"
    payload = f"x=open({str(marker)!r}, 'w'), *rest"
    path = tamper(
        honest,
        tmp_path / "named.pt2",
        lambda m: {
            **m,
            "model/models/model.json": json.dumps(replace_strings(json.loads(m["model/models/model.json"]), "x", payload)).encode(),
        },
    )
    refused(path, "not an identifier")
    assert not marker.exists()
    with contextlib.suppress(Exception):
        torch.export.load(path)
    assert marker.exists(), "the payload is live: FX writes the name into the code it executes"


def test_symbolic_expressions_cannot_inject_code(tmp_path, dynamic):
    marker = tmp_path / "marker"
    payload = f"Add(open({str(marker)!r}, 'w') and 0, Symbol('s31', positive=True, integer=True))"

    def inject(members):
        text = json.loads(members["model/models/model.json"])
        return {
            **members,
            "model/models/model.json": json.dumps(replace_strings(text, "Symbol('s31', positive=True, integer=True)", payload)).encode(),
        }

    path = tamper(dynamic, tmp_path / "expr.pt2", inject)
    refused(path, "symbolic expression bwsk will not evaluate")
    assert not marker.exists()
    with contextlib.suppress(Exception):
        torch.export.load(path)
    assert marker.exists(), "the payload is live: torch gives the expression to sympify"


def test_guard_code_is_dropped_and_calls_are_operators(tmp_path, honest):
    marker = tmp_path / "marker"
    guard = f"open({str(marker)!r}, 'w') is not None"
    guarded = tamper(honest, tmp_path / "guarded.pt2", lambda m: edit_json(m, "models/model.json", lambda p: p.update(guards_code=[guard])))
    program, inputs = sources.load_exported(guarded)
    program.module()(*inputs)
    assert not marker.exists()
    torch.export.load(guarded).module()(*inputs)
    assert marker.exists(), "the payload is live: torch compiles guard code into the module"

    def retarget(members):
        text = members["model/models/model.json"].decode().replace('"torch.ops.aten.add.Tensor"', '"torch.os.system"')
        return {**members, "model/models/model.json": text.encode()}

    refused(tamper(honest, tmp_path / "system.pt2", retarget), "system.*is not an allowed operator")


def test_a_zip_bomb_is_refused_from_its_directory(tmp_path, honest):
    path = tmp_path / "bomb.pt2"
    write_members(path, with_member("extra/zeros.txt", b"0" * 1000)(read_members(honest)), zipfile.ZIP_DEFLATED)
    patch_declared_size(path, "model/extra/zeros.txt", 4_000_000_000)
    assert path.stat().st_size < 20_000
    refused(path, "inflates to 4,000,0.*bytes from .*zip bomb")


def test_a_deflated_bomb_is_inflated_in_bounded_chunks(tmp_path, honest, monkeypatch):
    members = read_members(honest)
    path = tmp_path / "bomb.pt2"
    write_members(path, {**members, "model/extra/zeros.txt": bytes(32 * 2**20)}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    monkeypatch.setattr(archive_check, "INFLATION_ALLOWANCE", 2**20)
    refused(path, "zip bomb")
    monkeypatch.undo()
    patch_declared_size(path, "model/extra/zeros.txt", 1000)  # the directory now lies: the stream is longer
    refused(path, "corrupt")


def test_corrupt_streams_and_names_are_one_line(tmp_path, honest):
    members = read_members(honest)
    path = tmp_path / "deflated.pt2"
    write_members(path, {**members, "model/extra/text.txt": b"hello " * 1000}, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model/extra/text.txt")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 5 : start + 25] = bytes(20)
    path.write_bytes(bytes(data))
    refused(path, "corrupt")

    bad_name = tmp_path / "names.pt2"
    write_members(bad_name, {**members, "model/extra/é": b"x"})
    raw = bad_name.read_bytes().replace("é".encode(), b"\xff\xfe")
    bad_name.write_bytes(raw)
    with pytest.raises(SourceError, match="names.pt2: corrupt zip archive") as caught:
        sources.resolve(str(bad_name))
    assert "\n" not in str(caught.value)


def test_output_types_come_only_from_transformers_output_modules():
    assert hf_outputs.is_output_module("transformers.modeling_outputs")
    assert hf_outputs.is_output_module("transformers.models.gpt_neox.modeling_gpt_neox")
    for hostile in (
        "os",
        "antigravity",
        "transformers.models.gpt_neox.configuration_gpt_neox",
        "transformers.models.x.modeling_x",
        "transformers.models..modeling_",
    ):
        assert not hf_outputs.is_output_module(hostile)
    already = "antigravity" in sys.modules
    hf_outputs.register_output_types({"antigravity.Fly", "os.system"})
    assert ("antigravity" in sys.modules) == already


def test_a_directory_with_its_own_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    write_remote_code_directory(tmp_path / "evil", marker)
    with pytest.raises(SourceError, match="needs its own Python code.*--trust-remote-code"):
        sources.resolve(str(tmp_path / "evil"))
    assert not marker.exists()
    spec = importlib.util.spec_from_file_location("modeling_evil", tmp_path / "evil" / "modeling_evil.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert marker.exists(), "the payload is live: importing the modeling file runs it"


def test_missing_local_paths_are_not_hub_ids(tmp_path, monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("tried the hub")

    monkeypatch.setattr(sources, "load_hub", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for spec in ("./nope", "~/nope-bwsk", "models/pythia", "a/b/c", "model.safetensors", "x/model.pt2"):
        with pytest.raises(SourceError, match="no such file or directory"):
            sources.resolve(spec)


def test_unreadable_inputs_are_one_line(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").mkdir()
    with pytest.raises(SourceError, match="config.json: not a regular file"):
        sources.resolve(str(tmp_path / "hf"))
    with pytest.raises(SourceError, match="mem: cannot read"):
        sources.resolve("/proc/self/mem")
    with pytest.raises(SourceError, match="not a valid path"):
        sources.resolve("model\0.pt2")


@pytest.mark.parametrize("case", HOSTILE_FOLDERS)
def test_a_folder_is_checked_as_transformers_reads_it(tmp_path, case):
    """The config transformers builds from and every weight file it reads are what bwsk checks."""
    build, message = HOSTILE_FOLDERS[case]
    marker, folder = tmp_path / "marker", tmp_path / "model"
    zoo.build("pythia-70m", tiny=True, layers=1, device="cpu").save_pretrained(folder)
    build(folder, marker)
    with pytest.raises(SourceError, match=message) as caught:
        sources.resolve(str(folder), seq=8)
    assert "\n" not in str(caught.value) and not marker.exists()


def test_the_config_read_is_the_one_transformers_builds_from(tmp_path):
    from transformers import AutoConfig

    zoo.build("pythia-70m", tiny=True, layers=1).config.save_pretrained(tmp_path)
    honest = read_config(tmp_path)
    redirect_config(tmp_path, {**honest, "num_hidden_layers": 3}, name="config.4.0.0.json")
    (tmp_path / "config.999.0.0.json").write_text("{}")  # for a later transformers: not read by this one
    edit_json_file(tmp_path / "config.json", lambda c: c["configuration_files"].append("config.999.0.0.json"))
    assert read_config(tmp_path)["num_hidden_layers"] == 3 == AutoConfig.from_pretrained(tmp_path).num_hidden_layers
