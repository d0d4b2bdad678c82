"""Publishing a variant: the files of a finished run that one uploads, copied into the experiment's variant folder.

Everything the run folder holds is published except its working data (`WORKING`: run.json, metrics.jsonl,
checkpoints/), hidden names (a save in progress) and subfolders: the weights, config.json,
generation_config.json, the tokenizer files, training_results.json, and whatever else the model's save wrote
(a reversible model's own files). Each file is copied beside its target under a hidden name and moved in
(atomic), so a variant folder never holds a half-written file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bwsk.errors import BwskError
from bwsk.training.trainer.run_folder import CHECKPOINTS, METRICS_FILE, RUN_FILE

WORKING = (RUN_FILE, METRICS_FILE, CHECKPOINTS)


def publishable_files(run: Path) -> list[str]:
    """The names of the files of the run folder `run` that its published folder holds, sorted."""
    return sorted(item.name for item in run.iterdir() if item.name not in WORKING and not item.name.startswith(".") and item.is_file())


def publish_run(run: Path, target: Path) -> list[str]:
    """Copy the publishable files of the finished run folder `run` into `target` (made if missing); returns their names."""
    names = publishable_files(run)
    for name in names:
        partial = target / f".{name}.partial-{os.getpid()}"
        try:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / name, partial)
            os.replace(partial, target / name)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise BwskError(f"{target}: cannot publish {name} of the run {run} ({error.strerror or error})") from None
    return names
