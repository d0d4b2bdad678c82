"""Hugging Face model folders whose checks would read another file than transformers does, each with the one-line
refusal it earns: a config redirected by `configuration_files`, weights named by an index or by `transformers_weights`.

Each builder turns a saved folder (config.json and model.safetensors) into a hostile one; a payload it plants
creates `marker` when it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from frontend.hostile_archives import armed_torch_save, write_remote_code_directory
from safetensors.torch import load_file

from bwsk.frontend import zoo


def edit_json_file(path: Path, edit: Callable[[dict], object]) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def armed_pickle_directory(folder: Path, marker: Path) -> None:
    """A Hugging Face folder whose only weights are a torch.save pickle that creates `marker` when unpickled."""
    zoo.build("pythia-70m", tiny=True, layers=1).config.save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(armed_torch_save(marker))


def redirect_config(folder: Path, target: dict, name: str = "config.4.0.0.json") -> None:
    """Make config.json send transformers (>= 4.0.0) to `name`, which holds `target`."""
    (folder / name).write_text(json.dumps(target))
    edit_json_file(folder / "config.json", lambda config: config.update(configuration_files=[name]))


def deep_target(folder: Path, marker: Path) -> None:
    """config.json stays small; the file it redirects to has a million layers."""
    redirect_config(folder, {**json.loads((folder / "config.json").read_text()), "num_hidden_layers": 10**6})


def remote_code_target(folder: Path, marker: Path) -> None:
    """config.json stays clean; the file it redirects to maps the model to the folder's own code."""
    write_remote_code_directory(folder / "code", marker)
    for item in (folder / "code").glob("*.py"):
        item.rename(folder / item.name)
    auto_map = json.loads((folder / "code" / "config.json").read_text())["auto_map"]
    redirect_config(folder, {**json.loads((folder / "config.json").read_text()), "auto_map": auto_map})


def unparsable_version(folder: Path, marker: Path) -> None:
    edit_json_file(folder / "config.json", lambda config: config.update(configuration_files=["config.1.0/../../x.json"]))


def index_to_pickle(folder: Path, marker: Path) -> None:
    """The safetensors index sends one tensor to a pickle (transformers would torch.load it)."""
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model-00002-of-00002.bin").write_bytes(armed_torch_save(marker))
    weight_map = dict.fromkeys(weights, "model-00001-of-00002.safetensors") | {"extra": "model-00002-of-00002.bin"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def index_outside(folder: Path, marker: Path) -> None:
    """The safetensors index names a file beside the folder."""
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").rename(folder.parent / "outside.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": dict.fromkeys(weights, "../outside.safetensors")})
    )


def index_absolute(folder: Path, marker: Path) -> None:
    """The safetensors index names an absolute path (os.path.join would drop the folder)."""
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").rename(folder.parent / "elsewhere.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": dict.fromkeys(weights, str(folder.parent / "elsewhere.safetensors"))})
    )


def explicit_pickle(folder: Path, marker: Path) -> None:
    """The config's transformers_weights names a pickle, which transformers prefers to model.safetensors."""
    (folder / "adapter_model.bin").write_bytes(armed_torch_save(marker))
    edit_json_file(folder / "config.json", lambda config: config.update(transformers_weights="adapter_model.bin"))


HOSTILE_FOLDERS = {
    "redirected to a million layers": (deep_target, "1,000,000 layers"),
    "redirected to its own code": (remote_code_target, "needs its own Python code"),
    "redirected to an unparsable name": (unparsable_version, "configuration_files"),
    "index naming a pickle": (index_to_pickle, "refusing to unpickle"),
    "index naming a file outside": (index_outside, "is outside"),
    "index naming an absolute path": (index_absolute, "is outside"),
    "transformers_weights naming a pickle": (explicit_pickle, "refusing to unpickle"),
}
