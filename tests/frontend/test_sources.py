"""Recognising and loading model sources by content; pickles are never unpickled unless trusted."""

from __future__ import annotations

import contextlib
import io
import pickle
import zipfile
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from torch import nn

from bwsk.errors import SourceError
from bwsk.frontend import sources, tensor_outputs, zoo
from bwsk.frontend.sources import InputSpec, SourceKind

EXPORT_ADVICE = 'torch.export.save(torch.export.export(model, example_args), "model.pt2")'


class Armed:
    """Unpickling an Armed object creates its marker file (by opening it for writing)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


ARMED_FORMATS = ["plain-pickle", "legacy-torch-save", "torch-save-zip"]


def write_armed(path: Path, marker: Path, form: str) -> None:
    """A pickle (raw, legacy torch.save, or zip torch.save) that creates `marker` when unpickled."""
    if form == "plain-pickle":
        path.write_bytes(pickle.dumps(Armed(marker), protocol=2))
    else:
        torch.save(Armed(marker), path, _use_new_zipfile_serialization=form == "torch-save-zip")


def unpickle(path: Path, form: str) -> None:
    """Load an armed file the unsafe way (proving that it is armed)."""
    if form == "plain-pickle":
        with path.open("rb") as file:
            pickle.load(file).close()
    else:
        torch.load(path, weights_only=False).close()


@pytest.fixture(scope="module")
def gpt2() -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.export.ExportedProgram]:
    model = zoo.build("gpt2", tiny=True, layers=1, device="cpu")
    args = zoo.example_inputs("gpt2", model, seq=8)
    return model, args, tensor_outputs.export(model, args)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".pt2", ".pt", ".bin"])
def test_export_archive_loads_whatever_its_extension(tmp_path, gpt2, suffix):
    model, args, program = gpt2
    path = tmp_path / f"model{suffix}"
    torch.export.save(program, path)

    loaded, inputs = sources.load_exported(path)
    assert len(inputs) == 1 and torch.equal(inputs[0], args[0])
    torch.testing.assert_close(loaded.module()(*inputs), tensor_outputs.traceable(model)(*args))

    resolved = sources.resolve(str(path))
    assert resolved.kind is SourceKind.EXPORTED and resolved.module is None and resolved.name == path.name
    assert torch.equal(resolved.example_inputs[0], args[0])


def test_export_archive_without_example_inputs_gives_none(tmp_path):
    program = torch.export.export(nn.ReLU(), (torch.ones(3),))
    program.example_inputs = None
    path = tmp_path / "bare.pt2"
    torch.export.save(program, path)
    assert sources.load_exported(path)[1] is None


@pytest.mark.parametrize("form", ARMED_FORMATS)
def test_pickle_is_refused_without_being_unpickled(tmp_path, form):
    path, marker = tmp_path / "model.pt", tmp_path / "marker"
    write_armed(path, marker, form)
    assert sources.classify_file(path) is SourceKind.PICKLE

    for attempt in (
        lambda: sources.resolve(str(path)),
        lambda: sources.resolve(str(path), input_shapes=["1x4"]),
        lambda: sources.load_exported(path),
        lambda: sources.load_pickle(path),
    ):
        with pytest.raises(SourceError) as caught:
            attempt()
        assert "model.pt" in str(caught.value)
        assert not marker.exists()
    assert EXPORT_ADVICE in str(caught.value)

    unpickle(path, form)
    assert marker.exists()


@pytest.mark.slow
def test_export_archive_holding_an_armed_pickle_is_refused(tmp_path, gpt2):
    original, tampered, marker = tmp_path / "ok.pt2", tmp_path / "tampered.pt2", tmp_path / "marker"
    torch.export.save(gpt2[2], original)
    armed = io.BytesIO()
    torch.save(Armed(marker), armed)
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(tampered, "w") as target:
        for member in source.namelist():
            data = armed.getvalue() if "/data/sample_inputs/" in member else source.read(member)
            target.writestr(member, data)

    with pytest.raises(SourceError, match="tampered.pt2.*weights-only"):
        sources.load_exported(tampered)
    assert not marker.exists()

    with contextlib.suppress(Exception):
        torch.export.load(tampered)  # torch itself would run the pickle
    assert marker.exists()


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-torch-save", "torch-save-zip"])
def test_trusted_pickle_loads_and_exports(tmp_path, legacy):
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3), nn.ReLU())
    path = tmp_path / "model.pt"
    torch.save(model, path, _use_new_zipfile_serialization=not legacy)

    resolved = sources.resolve(str(path), trust_pickle=True, input_shapes=["1x6:i64"], dynamic_batch=True)
    assert resolved.kind is SourceKind.PICKLE
    (ids,) = resolved.example_inputs
    assert ids.dtype == torch.long and ids.shape == (1, 6)
    torch.testing.assert_close(resolved.program.module()(ids), model(ids))
    batch = torch.randint(0, 10, (3, 6))
    torch.testing.assert_close(resolved.program.module()(batch), model(batch))


def test_trusted_pickle_needs_input_shapes_and_a_module(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(4, 3), path)
    with pytest.raises(SourceError, match="input shapes"):
        sources.resolve(str(path), trust_pickle=True)
    resolved = sources.resolve(str(path), trust_pickle=True, input_shapes=[(2, 4)])
    assert resolved.example_inputs[0].dtype == torch.float32
    torch.save(nn.Linear(4, 3).state_dict(), path)
    with pytest.raises(SourceError, match="holds a OrderedDict, not an nn.Module"):
        sources.resolve(str(path), trust_pickle=True, input_shapes=["2x4"])


def test_input_spec():
    assert InputSpec.parse("1x16:i64") == InputSpec((1, 16), torch.long)
    assert InputSpec.parse("2x3") == InputSpec((2, 3), torch.float32)
    assert InputSpec.parse((1, 16)) == InputSpec((1, 16))
    for bad in ("1xq", "1x2:f8", "1x-2"):
        with pytest.raises(SourceError):
            InputSpec.parse(bad)


def save_tiny_pythia(directory: Path) -> nn.Module:
    model = zoo.build("pythia-70m", tiny=True, layers=1, device="cpu", seed=5)
    model.save_pretrained(directory)
    return model


@pytest.mark.slow
def test_hf_directory_with_weights_loads_them(tmp_path):
    saved = save_tiny_pythia(tmp_path / "pythia")
    resolved = sources.resolve(str(tmp_path / "pythia"), seq=8)
    assert resolved.kind is SourceKind.HF_DIR and resolved.name == "pythia"
    loaded = resolved.module.model
    assert type(loaded) is type(saved)
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    (ids,) = resolved.example_inputs
    torch.testing.assert_close(resolved.program.module()(ids), tensor_outputs.traceable(saved)(ids))


@pytest.mark.slow
def test_hf_directory_with_sharded_weights_loads_every_shard_its_index_names(tmp_path):
    from bwsk.frontend.hf_files import read_config, weight_files

    saved = zoo.build("pythia-70m", tiny=True, layers=1, device="cpu", seed=5)
    saved.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    shards = weight_files(tmp_path / "sharded", read_config(tmp_path / "sharded"), trust_pickle=False)
    assert len(shards) > 1 and sorted(shards) == sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    loaded = sources.resolve(str(tmp_path / "sharded"), seq=8).module.model
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.slow
def test_hf_directory_without_weights_is_randomly_initialised(tmp_path):
    zoo.build("pythia-70m", tiny=True, layers=1).config.save_pretrained(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]

    on_meta = sources.resolve(str(tmp_path), seq=8)
    assert next(on_meta.module.parameters()).device.type == "meta"
    on_cpu = sources.resolve(str(tmp_path), seq=8, device="cpu")
    (ids,) = on_cpu.example_inputs
    torch.testing.assert_close(on_cpu.program.module()(ids), on_cpu.module(ids))


def test_hf_directory_with_pickled_weights_is_refused(tmp_path):
    zoo.build("pythia-70m", tiny=True, layers=1).config.save_pretrained(tmp_path)
    marker = tmp_path.parent / "marker"
    write_armed(tmp_path / "pytorch_model.bin", marker, "torch-save-zip")
    with pytest.raises(SourceError, match=r"refusing to unpickle the weights in .*torch.load pytorch_model.bin"):
        sources.resolve(str(tmp_path))
    assert not marker.exists()


def test_directory_without_config_json(tmp_path):
    with pytest.raises(SourceError, match=f"{tmp_path}: a directory without config.json"):
        sources.resolve(str(tmp_path))


def foreign_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")


def truncated_archive(path: Path) -> None:
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(nn.ReLU(), (torch.ones(3),)), buffer)
    path.write_bytes(buffer.getvalue()[:300])


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (None, "no such file or directory"),
        (lambda p: p.write_bytes(b"\x00\x01garbage bytes"), r"not a model file; found first bytes b'\\x00\\x01garb"),
        (lambda p: p.write_bytes(b""), "not a model file; found an empty file"),
        (truncated_archive, "corrupt zip archive"),
        (foreign_zip, "neither torch.export.save nor torch.save"),
    ],
    ids=["missing", "garbage", "empty", "truncated-zip", "foreign-zip"],
)
def test_unreadable_files_name_themselves(tmp_path, write, expected):
    path = tmp_path / "broken.pt2"
    if write is not None:
        write(path)
    with pytest.raises(SourceError, match=expected) as caught:
        sources.resolve(str(path))
    assert "broken.pt2" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_zoo_names_resolve_and_unknown_names_do_not():
    resolved = sources.resolve("bert-base", tiny=True, layers=1, seq=8, device="cpu", dynamic_batch=True)
    assert resolved.kind is SourceKind.ZOO and resolved.name == "bert-base"
    torch.testing.assert_close(resolved.program.module()(*resolved.example_inputs), resolved.module(*resolved.example_inputs))
    with pytest.raises(SourceError, match="unknown zoo model 'bert'; known: bert-base"):
        sources.resolve("bert")


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceError, match=r"'bwsk-tests/no-such-model'.*Hugging Face Hub"):
        sources.resolve("bwsk-tests/no-such-model")
