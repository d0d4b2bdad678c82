"""The run folder: what a run writes, and the rule that nothing in it is replaced without --force.

A run folder holds `run.json` (the configuration and the inputs, written first: what
`--resume` reads), `metrics.jsonl`, `checkpoints/`, and once finished the model as a
Hugging Face folder (config.json, model.safetensors, tokenizer files) and
`training_results.json`. `--force` removes only these names, never other files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError, SourceError
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


def prepare_new(folder: Path, *, force: bool) -> None:
    """Make `folder` ready for a new run: created if missing; a folder holding a run's files is refused without `force`."""
    if folder.exists() and not folder.is_dir():
        raise BwskError(f"{folder}: exists and is not a folder")
    found = [name for name in OWNED if (folder / name).exists()]
    if found and not force:
        raise BwskError(f"{folder}: already holds a run ({found[0]}); pass --force to replace it, or --resume to continue it")
    for name in found:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def write_run_file(folder: Path, document: dict[str, Any]) -> None:
    """`run.json`: what a resumed run needs to rebuild this one (config, inputs)."""
    write_atomic(str(folder / RUN_FILE), json.dumps(document, indent=2, allow_nan=False) + "\n", force=True)


def read_run_file(folder: Path) -> dict[str, Any]:
    """The `run.json` of a run to resume; refused for a folder without one or a run that already finished."""
    path = folder / RUN_FILE
    if not path.is_file():
        raise SourceError(f"{folder}: no {RUN_FILE}, so not a bwsk-train run folder to resume")
    if (folder / RESULTS_FILE).exists():
        raise BwskError(f"{folder}: the run already finished ({RESULTS_FILE} exists); nothing to resume")
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SourceError(f"{path}: unreadable ({error})") from None
    if not isinstance(document, dict) or "config" not in document:
        raise SourceError(f"{path}: not a run description")
    return document
