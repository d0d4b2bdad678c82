"""The run folder: what a run writes, and the rule that nothing in it is replaced without --force.

A run folder holds `run.json` (the configuration and the inputs, absolute paths and content
hashes, and the bwsk version; written first: what `--resume` reads), `metrics.jsonl`, `checkpoints/`, and once finished the model as a
Hugging Face folder (config.json, model.safetensors, tokenizer files) and
`training_results.json`. `--force` removes only these names, never other files.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from pathlib import Path
from typing import Any

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError, SourceError, first_line
from bwsk.training.field_types import is_count
from bwsk.training.results import RESULTS_FILE

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
OWNED = (RUN_FILE, METRICS_FILE, CHECKPOINTS, RESULTS_FILE, *MODEL_FILES)


def require_writable(folder: Path) -> None:
    """Refuse a run folder that could not be made or written (a file in its way, no permission, a read-only file system).

    Nothing is created: callers check before the work, so that a refused run leaves no folder behind.
    """
    existing = Path(os.path.abspath(folder))
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        kind = "a file" if existing.exists() else "a broken link"
        raise BwskError(
            f"{folder}: exists and is not a folder" if existing == Path(os.path.abspath(folder)) else f"{folder}: {existing} is {kind}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BwskError(f"{folder}: cannot write in {existing} (no permission, or a read-only file system)")


def prepare_new(folder: Path, *, force: bool) -> None:
    """Make `folder` ready for a new run: created if missing; a folder holding a run's files is refused without `force`."""
    require_writable(folder)
    found = [name for name in OWNED if (folder / name).exists()]
    if found and not force:
        raise BwskError(f"{folder}: already holds a run ({found[0]}); pass --force to replace it, or --resume to continue it")
    try:
        for name in found:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BwskError(f"{folder}: cannot prepare the run folder ({error.strerror or error})") from None


def write_run_file(folder: Path, document: dict[str, Any]) -> None:
    """`run.json`: what a resumed run needs to rebuild this one (config, inputs), and the version of bwsk that wrote it."""
    document = {**document, "bwsk_version": bwsk_version()}
    write_atomic(str(folder / RUN_FILE), json.dumps(document, indent=2, allow_nan=False) + "\n", force=True)


def bwsk_version() -> str:
    """The installed bwsk's version ("unknown" when run from a source tree that is not installed)."""
    try:
        return importlib.metadata.version("bwsk")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def read_run_file(folder: Path) -> dict[str, Any]:
    """The `run.json` of a run to resume; refused for a folder without one, a run that already finished, or a file
    that is not a run description (an object with a config and inputs objects and, if any, a whole number of processes)."""
    path = folder / RUN_FILE
    if not path.is_file():
        raise SourceError(f"{folder}: no {RUN_FILE}, so not a bwsk-train run folder to resume")
    if (folder / RESULTS_FILE).exists():
        raise BwskError(f"{folder}: the run already finished ({RESULTS_FILE} exists); nothing to resume")
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise SourceError(f"{path}: unreadable ({first_line(error)})") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict) or not isinstance(document.get("inputs", {}), dict):
        raise SourceError(f"{path}: not a run description (an object with config and inputs objects)")
    world_size = document.get("world_size", 1)
    if not (is_count(world_size) and world_size >= 1):
        raise SourceError(f"{path}: world_size must be a whole number of processes, not {world_size!r}")
    return document
