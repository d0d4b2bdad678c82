"""Builders of hostile inputs: torch.export archives tampered member by member, and armed payloads.

Every payload creates a marker file when it runs, so a test proves both that torch would run
it and that bwsk did not.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bwsk.frontend import zoo

Members = dict[str, bytes]


class Armed:
    """Unpickling an Armed object creates its marker file (by opening it for writing)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def armed_pickle(marker: Path, protocol: int = 2) -> bytes:
    return pickle.dumps(Armed(marker), protocol=protocol)


def armed_torch_save(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(Armed(marker), buffer)
    return buffer.getvalue()


def save_linear(path: Path) -> None:
    """A small, honest archive: a Linear layer with weights, a constant tensor and stored example inputs."""

    class WithConstant(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)
            self.offset = torch.tensor([0.5, -0.5])  # a lifted tensor constant

        def forward(self, x):
            return self.linear(x) + self.offset

    torch.export.save(torch.export.export(WithConstant(), (torch.randn(2, 3),)), path)


def save_dynamic(path: Path) -> None:
    """An archive with a symbolic batch dimension, so its program text holds symbolic expressions."""
    batch = torch.export.Dim("batch", min=2, max=64)
    program = torch.export.export(nn.Linear(3, 2), (torch.randn(4, 3),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


def read_members(path: Path) -> Members:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_members(path: Path, members: Members | list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> None:
    items = members.items() if isinstance(members, dict) else members
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", compression) as archive:
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which some tests want
        for name, data in items:
            archive.writestr(name, data)


def tamper(source: Path, target: Path, change: Callable[[Members], Members | list[tuple[str, bytes]]]) -> Path:
    write_members(target, change(read_members(source)))
    return target


def root_of(members: Members) -> str:
    return next(iter(members)).split("/", 1)[0]


def edit_json(members: Members, suffix: str, edit: Callable[[dict], None]) -> Members:
    """Apply `edit` to the JSON member whose name ends with `suffix`."""
    (name,) = [n for n in members if n.endswith(suffix)]
    loaded = json.loads(members[name])
    edit(loaded)
    return {**members, name: json.dumps(loaded).encode()}


def replace_strings(value, old: str, new: str):
    """`value` (JSON) with every string equal to `old`, keys included, replaced by `new`."""
    if isinstance(value, dict):
        return {new if k == old else k: replace_strings(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_strings(v, old, new) for v in value]
    return new if value == old else value


def patch_declared_size(path: Path, member: str, size: int) -> None:
    """Overwrite a member's uncompressed size in its local header and in the central directory."""
    data = bytearray(path.read_bytes())
    encoded = member.encode()
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, size)
    central = data.rfind(b"PK\x01\x02" + data[info.header_offset + 4 : info.header_offset + 6])
    while data[central + 46 : central + 46 + len(encoded)] != encoded:
        central = data.rfind(b"PK\x01\x02", 0, central)
    struct.pack_into("<I", data, central + 24, size)
    path.write_bytes(bytes(data))


def write_remote_code_directory(directory: Path, marker: Path) -> None:
    """A directory whose config maps AutoModel to its own modeling file, which creates `marker` when imported."""
    config = zoo.build("pythia-70m", tiny=True, layers=1).config.to_dict()
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    code = f"open({str(marker)!r}, 'w').close()\n"
    (directory / "configuration_evil.py").write_text(code)
    (directory / "modeling_evil.py").write_text(code)
