"""Register the pytree types of transformers outputs an archive names, so saved Hugging Face programs load.

transformers registers each `ModelOutput` subclass with pytree when the module defining it is
imported, under the name `module.Class`. An archive's signature names such types; a name is
honoured only when its module is one of transformers' own output modules (`modeling_outputs`,
or a `modeling_*` module of a model folder that exists in the installed transformers), so an
archive can never make bwsk import a module of its choosing.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

MODEL_MODULE = re.compile(r"transformers\.models\.(\w+)\.(modeling_\w+)")


def register_output_types(type_names: Iterable[str]) -> None:
    """Import the allow-listed transformers modules that define `type_names` (others are left to torch to reject)."""
    for module in sorted({name.rpartition(".")[0] for name in type_names}):
        if is_output_module(module):
            importlib.import_module(module)


def is_output_module(module: str) -> bool:
    """True for `transformers.modeling_outputs` and `transformers.models.NAME.modeling_*` files that exist."""
    root = _transformers_folder()
    if root is None:
        return False
    if module == "transformers.modeling_outputs":
        return True
    match = MODEL_MODULE.fullmatch(module)
    return match is not None and (root / "models" / match.group(1) / f"{match.group(2)}.py").is_file()


@cache
def _transformers_folder() -> Path | None:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
