"""The files transformers reads from a model directory, found the way transformers finds them, so that bwsk's checks
(size, remote code, pickles) read what the loader will read.

The config: `config.json`, unless it lists `configuration_files`; then transformers builds from the
`config.X.json` that `get_configuration_file` picks for its version (asked of transformers itself here).
The weights (a local directory, transformers 5): every `*.safetensors` when a distributed shard
(`shard-NNNNN-model-NNNNN-of-NNNNN.safetensors`) is present; else the file the config's
`transformers_weights` names; else `model.safetensors`; else every file `model.safetensors.index.json`
names; else `pytorch_model.bin` or every file its index names. transformers opens a file whose name
ends in `.safetensors` with safetensors and hands any other to `torch.load`: a pickle.

Invariant: every file named by a config or an index is a regular file inside the directory (no absolute
path, no `..`), and a pickle among the weights is refused unless `trust_pickle`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from bwsk.errors import SourceError, first_line

CONFIG = "config.json"
MAX_JSON_BYTES = 16 * 2**20
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
DISTRIBUTED_SHARD = re.compile(r"shard-[0-9]{5}-model-[0-9]{5}-of-[0-9]{5}\.safetensors")
PICKLE_HINT = "save them as safetensors (model.save_pretrained(dir)), or pass --trust-pickle (trust_pickle=True) if you trust them"


def read_config(folder: Path) -> dict[str, Any]:
    """The config transformers builds `folder`'s model from, as a JSON object (read by bwsk, before transformers sees it)."""
    config = read_json_object(folder / CONFIG, missing=f"{folder}: a directory without {CONFIG}, so not a Hugging Face model directory")
    if "configuration_files" not in config:
        return config
    chosen = _configuration_file(config["configuration_files"], folder / CONFIG)
    if chosen == CONFIG:
        return config
    return read_json_object(inside(folder, chosen, f"{folder / CONFIG}: configuration_files"))


def weight_files(folder: Path, config: dict[str, Any], *, trust_pickle: bool) -> list[Path]:
    """The weight files transformers will read from `folder` (see the module docstring); [] when it finds none.

    A file that is not a `.safetensors` file (transformers would `torch.load` it) is refused unless `trust_pickle`.
    """
    if any(DISTRIBUTED_SHARD.fullmatch(item.name) for item in folder.glob("shard-*.safetensors")):
        return sorted(folder.glob("*.safetensors"))
    explicit = config.get("transformers_weights")
    if explicit is not None:
        named = inside(folder, explicit, f"{folder / CONFIG}: transformers_weights")
        files = _indexed(folder, named) if named.name.endswith(".safetensors.index.json") else [named]
    elif (folder / SAFETENSORS).is_file():
        files = [folder / SAFETENSORS]
    elif (folder / SAFETENSORS_INDEX).is_file():
        files = _indexed(folder, folder / SAFETENSORS_INDEX)
    elif (folder / PICKLE).is_file():
        files = [folder / PICKLE]
    elif (folder / PICKLE_INDEX).is_file():
        files = _indexed(folder, folder / PICKLE_INDEX)
    else:
        return []
    pickles = [file for file in files if not file.name.endswith(".safetensors")]
    if pickles and not trust_pickle:
        raise SourceError(
            f"refusing to unpickle the weights in {folder}: transformers would torch.load {pickles[0].name}", hint=PICKLE_HINT
        )
    return files


def inside(folder: Path, name: Any, what: str) -> Path:
    """`folder / name` for a relative `name` that stays inside `folder` and names a regular file; else a one-line refusal."""
    if not isinstance(name, str) or not name:
        raise SourceError(f"{what}: expected a file name, got {json.dumps(name)[:80]}")
    normal = os.path.normpath(name)
    if os.path.isabs(name) or normal == ".." or normal.startswith(f"..{os.sep}"):
        raise SourceError(f"{what}: {name!r} is outside {folder}; refusing to read it")
    path = folder / normal
    if not path.is_file():
        raise SourceError(f"{what}: {name!r} is not a file in {folder}")
    return path


def read_json_object(path: Path, *, missing: str | None = None) -> dict[str, Any]:
    """A JSON object from a regular file of at most MAX_JSON_BYTES; anything else is a one-line SourceError."""
    if not path.exists():
        raise SourceError(missing or f"{path}: no such file")
    if not path.is_file():
        raise SourceError(f"{path}: not a regular file")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise SourceError(f"{path}: {path.stat().st_size:,} bytes, too large for a model's JSON file")
        loaded = json.loads(path.read_bytes())
    except OSError as error:
        raise SourceError(f"{path}: cannot read ({error.strerror or first_line(error)})") from None
    except (ValueError, RecursionError) as error:
        raise SourceError(f"{path}: unreadable JSON: {first_line(error)}") from None
    if not isinstance(loaded, dict):
        raise SourceError(f"{path}: unreadable JSON: not a JSON object")
    return loaded


def _configuration_file(names: Any, config: Path) -> str:
    """The file transformers picks from a `configuration_files` list (its own `get_configuration_file`)."""
    from transformers.configuration_utils import get_configuration_file

    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise SourceError(f"{config}: configuration_files must be a list of file names")
    try:
        return get_configuration_file(names)
    except Exception as error:  # a name transformers cannot parse as a version
        raise SourceError(f"{config}: configuration_files: {first_line(error)}") from None


def _indexed(folder: Path, index: Path) -> list[Path]:
    """Every file the index's `weight_map` names, each inside `folder`."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise SourceError(f"{index}: no weight_map object, so not a weights index")
    names = list(weight_map.values())
    if not all(isinstance(name, str) for name in names):
        raise SourceError(f"{index}: weight_map values must be file names")
    return [inside(folder, name, f"{index}: weight_map") for name in sorted(set(names))]
