"""Runs from what the user names: `RunSpec` (model, data, tokenizer) + `TrainConfig` -> a run folder.

    spec = RunSpec(model="pythia-70m", data="../shared/data/wikitext-2", split="proxy", tokenizer="tok.json")
    result = run_training(spec, TrainConfig(mode="analyzed", seed=1), Path("runs/analyzed"))
    result = resume_training(Path("runs/analyzed"))          # after a kill or Ctrl-C
    results, summary = run_seeds(spec, config, Path("runs/a"), seeds=3)   # runs/a/seed-0, seed-1, seed-2, seeds.json

The spec is stored in the run's run.json (local paths made absolute, with content hashes of the data
and the tokenizer file), so `resume_training` rebuilds the run from the folder alone, from any working
directory, and refuses data or a tokenizer that changed since (and a run of an experiment's grid, whose
start the spec alone does not give). Trust is never taken from a run folder:
a run started with `trust_remote_code` or `trust_pickle` resumes only when the caller passes them again.
`prepare_data` loads and tokenizes once for callers that train several variants on the same data
(pass its result as `data=`).

Several seeds of one run have one layout, here and in the experiment's `runs/VARIANT/`: every seed's run
folder is `seed-S/` (the first seed's too), beside `seeds.json` (the mean and spread over them). With
--force, a seed folder this call does not run loses the names a run owns (`OWNED`), and the folder itself
once empty: no stale seed sits beside a summary that leaves it out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError, SourceError, first_line
from bwsk.training.distributed import is_main_process
from bwsk.training.experiments.report import seed_summary
from bwsk.training.experiments.start import StartModel, load_start_model
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import TokenSplits, load_text_splits, load_tokenizer, tokenize_splits, tokenizer_file
from bwsk.training.trainer.field_types import require_field_types
from bwsk.training.trainer.run import train
from bwsk.training.trainer.run_folder import OWNED, RUN_FILE, RunResult, read_run_file, require_writable

SEEDS_FILE = "seeds.json"
SEED_FOLDER = "seed-{}"


@dataclass(frozen=True)
class RunSpec:
    """What a run starts from: MODEL (zoo name, HF folder or Hub id, earlier run), DATA and its split rule, the tokenizer.

    `tokenizer` None: the model folder's tokenizer.json. `tiny`/`layers` shape a zoo model. `trust_remote_code`:
    a model folder's own code may run; `trust_pickle`: its pickled weights may be loaded.
    """

    model: str
    data: str
    split: str | None = None
    dataset_config: str | None = None
    tokenizer: str | None = None
    tiny: bool = False
    layers: int | None = None
    trust_remote_code: bool = False
    trust_pickle: bool = False

    def start_model(self, data: PreparedData, *, seed: int) -> StartModel:
        """The model a run of this spec starts from, its vocabulary grown to hold `data`'s tokens (see `load_start_model`)."""
        return load_start_model(
            self.model,
            vocab_size=data.splits.vocab_size,
            tiny=self.tiny,
            layers=self.layers,
            seed=seed,
            trust_remote_code=self.trust_remote_code,
            trust_pickle=self.trust_pickle,
        )

    def __post_init__(self) -> None:
        require_field_types(RunSpec, self.__dict__, lambda name: f"inputs.{name}")
        for name in ("model", "data", "tokenizer"):
            if "\0" in (getattr(self, name) or ""):
                raise BwskError(f"inputs.{name}: {getattr(self, name)!r} is not a valid path (it holds a NUL byte)")
        if self.layers is not None and self.layers < 1:
            raise BwskError(f"inputs.layers must be at least 1, not {self.layers}")

    def recorded(self) -> dict[str, Any]:
        """The spec as run.json stores it: local paths (model, data, tokenizer) absolute, so any folder can resume it."""
        local = {name: os.path.abspath(value) for name in ("model", "data") if Path(value := getattr(self, name)).exists()}
        return {**dataclasses.asdict(self), **local, "tokenizer": os.path.abspath(self.tokenizer_path())}

    def tokenizer_path(self) -> Path:
        if self.tokenizer is not None:
            return Path(self.tokenizer)
        beside = Path(self.model) / "tokenizer.json"
        if beside.is_file():
            return beside
        raise SourceError(f"{self.model}: no tokenizer.json beside the model; pass --tokenizer PATH/tokenizer.json")


@dataclass(frozen=True)
class PreparedData:
    """A tokenizer and the data tokenized with it; `sha256`: hashes of the texts ("data") and the tokenizer file."""

    tokenizer: Any
    splits: TokenSplits
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)


def prepare_data(spec: RunSpec) -> PreparedData:
    """Load the tokenizer and the three splits named by `spec`, tokenized."""
    texts = load_text_splits(spec.data, spec.split, dataset_config=spec.dataset_config)
    file = tokenizer_file(spec.tokenizer_path())
    tokenizer = load_tokenizer(file)
    try:
        tokenizer_hash = hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError as error:
        raise SourceError(f"{file}: cannot read ({error.strerror or first_line(error)})") from None
    return PreparedData(tokenizer, tokenize_splits(texts, tokenizer), {"data": texts.sha256(), "tokenizer": tokenizer_hash})


def run_training(
    spec: RunSpec,
    config: TrainConfig,
    out: Path,
    *,
    data: PreparedData | None = None,
    force: bool = False,
    progress: bool | None = None,
    observer: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> RunResult:
    """Load the start model of `spec` (random weights drawn from `config.seed`) and train it into `out`."""
    require_writable(out)  # before the minutes of loading
    data = data or prepare_data(spec)
    start = spec.start_model(data, seed=config.seed)
    return train(
        start.model,
        data.splits,
        config,
        out,
        pretrained=start.pretrained,
        source=f"{spec.model} ({start.source})",
        tokenizer=data.tokenizer,
        inputs={**spec.recorded(), "sha256": data.sha256},
        resume=resume,
        force=force,
        progress=progress,
        observer=observer,
    )


def resume_training(
    out: Path,
    *,
    trust_remote_code: bool = False,
    trust_pickle: bool = False,
    progress: bool | None = None,
    observer: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Continue the run in `out` from its latest checkpoint, with the spec and config its run.json records.

    The trust flags are this call's, never run.json's: a run started with one resumes only when it is given again.
    """
    document = read_run_file(out)
    path = out / RUN_FILE
    inputs = dict(document.get("inputs", {}))
    hashes = inputs.pop("sha256", None)
    if "experiment" in inputs:  # its start (scratch: random init of MODEL's architecture) is the grid's, not the spec's
        raise BwskError(
            f"{out}: a run of `bwsk-train experiment` ({inputs.get('variant')}), which does not resume on its own; "
            "run the experiment again with --force"
        )
    try:
        saved, config = RunSpec(**inputs), TrainConfig.from_json(document["config"])
    except TypeError:
        raise SourceError(f"{path}: does not name the run's inputs (it was not started by bwsk-train)") from None
    except BwskError as error:
        raise SourceError(f"{path}: {error.message}") from None
    flags = [f"--{name.replace('_', '-')}" for name, given in (("trust_remote_code", trust_remote_code), ("trust_pickle", trust_pickle))
             if getattr(saved, name) and not given]  # fmt: skip
    if flags:
        raise BwskError(
            f"{out}: the run was started with {' and '.join(flags)}, which is never taken from a run folder; "
            f"if you still trust its model, pass it again: bwsk-train --resume {out} {' '.join(flags)}"
        )
    spec = dataclasses.replace(saved, trust_remote_code=trust_remote_code, trust_pickle=trust_pickle)
    if Path(spec.data).is_absolute() and not Path(spec.data).exists():
        raise SourceError(f"{spec.data}: no such file or folder (the run's data, as {path} records it)")
    data = prepare_data(spec)
    if not isinstance(hashes, dict | None):
        raise SourceError(f"{path}: inputs.sha256 must be an object, not {hashes!r}")
    changed = [name for name, digest in (hashes or {}).items() if data.sha256.get(name) != digest]  # a run.json of before: none
    if changed:
        what = {"data": f"the data ({spec.data})", "tokenizer": f"the tokenizer ({spec.tokenizer_path()})"}.get(changed[0], changed[0])
        raise SourceError(
            f"{out}: {what} changed since the run started (its sha256 differs from {path}); resuming would train on other tokens"
        )
    return run_training(spec, config, out, data=data, progress=progress, observer=observer, resume=True)


def run_seeds(
    spec: RunSpec,
    config: TrainConfig,
    out: Path,
    *,
    seeds: int,
    force: bool = False,
    progress: bool | None = None,
    observer: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[RunResult], dict[str, Any]]:
    """`seeds` runs with seeds config.seed, config.seed + 1, ... in `out/seed-S/`; the summary (mean, spread) goes to seeds.json."""
    config.require_seeds(seeds)
    require_writable(out)
    summary_path = out / SEEDS_FILE
    if summary_path.exists() and not force:
        raise SourceError(f"{summary_path}: already exists (pass --force to replace it)")
    data = prepare_data(spec)
    chosen = range(config.seed, config.seed + seeds)
    if force:
        remove_seed_runs(out, keep=chosen)  # the runs of `chosen` are replaced by their own run
    results = []
    for seed in chosen:
        seeded = dataclasses.replace(config, seed=seed)
        results.append(run_training(spec, seeded, seed_folder(out, seed), data=data, force=force, progress=progress, observer=observer))
    return results, write_seed_summary(out, results)


def seed_folder(out: Path, seed: int) -> Path:
    """The run folder of seed `seed` among several seeds of one run in `out`."""
    return out / SEED_FOLDER.format(seed)


def write_seed_summary(out: Path, results: list[RunResult]) -> dict[str, Any]:
    """`out/seeds.json`: the mean and spread over the seeds of one run (rank 0 writes); returns it."""
    summary = seed_summary(results)
    if is_main_process():
        write_atomic(str(out / SEEDS_FILE), json.dumps(summary, indent=2, allow_nan=False) + "\n", force=True)
    return summary


def remove_seed_runs(out: Path, *, keep: range = range(0)) -> None:
    """Remove, from each run folder `out/seed-S/` whose S is not in `keep`, the names a run owns, and the folder once empty."""
    kept = {SEED_FOLDER.format(seed) for seed in keep}
    for folder in sorted(out.glob(SEED_FOLDER.format("*"))):
        if folder.name not in kept and (folder / RUN_FILE).is_file():
            remove_owned(folder)


def remove_owned(folder: Path) -> None:
    """Remove the names a run owns (`OWNED`) from `folder`, and `folder` itself once empty; any other file stays."""
    try:
        for name in OWNED:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif os.path.lexists(target):
                target.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    except OSError as error:
        raise BwskError(f"{folder}: cannot remove an earlier run ({error.strerror or error})") from None
