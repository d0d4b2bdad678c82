"""`run_experiment`: the grid of experiments (fine-tune, scratch) x training modes x seeds, written as a folder to publish
beside the working data of its runs.

    spec = RunSpec("runs/base", "data/wikitext-2", split="proxy")      # MODEL: the pretrained start
    run_experiment(spec, TrainConfig(max_steps=200), Path("out"), seeds=3)

writes
    OUT/README.md                     the model card: Hub metadata (YAML), seed table, noise floor, configuration, plots
    OUT/results.json                  every run, and per variant the mean and spread over seeds
    OUT/loss_curves.png, OUT/peak_memory.png
    OUT/finetune-conventional/        what one uploads, the first seed's model: model.safetensors, config.json,
    OUT/finetune-bwsk-analyzed/       generation_config.json, tokenizer files (eos/bos/pad set), training_results.json
    OUT/finetune-bwsk-reversible/     (and whatever else a reversible model's save writes)
    OUT/scratch-.../                  ...
    OUT/runs/VARIANT/seed-S/          every run's working folder: checkpoints/, metrics.jsonl, run.json, its model
    OUT/runs/VARIANT/seeds.json       the spread over seeds: `run_seeds`' layout (bwsk-train MODEL --seeds N)

The variant folders are written once every run has finished (from the first seed's run folder, see
`publish`), then the card and results.json (last). The tokenizer must hold an end-of-text token
(`require_special_tokens`): refused, before any run, without one. OUT holds one experiment: without
--force an OUT holding any of the names above (for any variant) is refused; with --force, once every
check has passed, those names are removed, each run folder losing only the names a run owns.

Starts: "scratch" draws MODEL's architecture at random from each run's seed (the same
initial weights for every mode of one seed); "finetune" starts every run from MODEL's
pretrained weights, and is refused when MODEL has none (a zoo name: random init), or
when MODEL is a reversible run and a finetune mode is another (the function would change). A run
whose loss turns NaN or infinite stops the experiment: `ExperimentFailed` names the
variant and seed, and no variant folder, results.json or README.md is written.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bwsk.errors import BwskError
from bwsk.render.units import human_bytes
from bwsk.training.distributed import is_main_process, resolve_device
from bwsk.training.experiments.lm_eval_task import TASK_FILES, TASK_FOLDER
from bwsk.training.experiments.publish import publish_run, publishable_files
from bwsk.training.experiments.report import CARD, LOSS_PLOT, MEMORY_PLOT, RESULTS_JSON, experiment_results, write_experiment_outputs
from bwsk.training.experiments.runs import (
    SEEDS_FILE,
    PreparedData,
    RunSpec,
    prepare_data,
    remove_owned,
    remove_seed_runs,
    seed_folder,
    write_seed_summary,
)
from bwsk.training.experiments.start import StartModel
from bwsk.training.modes import MODES
from bwsk.training.modes.apply import is_reversible, seam_kernels
from bwsk.training.reversible.huggingface import MODEL_TYPE
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import require_special_tokens
from bwsk.training.trainer.interrupt import TrainingInterrupted
from bwsk.training.trainer.optimizer import TrainingDiverged
from bwsk.training.trainer.progress import RunsProgress
from bwsk.training.trainer.run import train
from bwsk.training.trainer.run_folder import RunResult, require_writable

EXPERIMENTS = ("finetune", "scratch")
DEFAULT_MODES = ("conventional", "analyzed", "reversible")
RUNS = "runs"
EXPERIMENT_FILES = (CARD, RESULTS_JSON, LOSS_PLOT, MEMORY_PLOT)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ExperimentFailed(TrainingDiverged):
    """A run of the grid diverged: the experiment stopped and wrote no results.json or model card."""


@dataclass(frozen=True)
class Variant:
    """One cell of the grid: an experiment and a mode; `folder` is its name in the layout."""

    experiment: str
    mode: str

    @property
    def folder(self) -> str:
        return f"{self.experiment}-{'conventional' if self.mode == 'conventional' else 'bwsk-' + self.mode}"


def variant_grid(experiments: Sequence[str], modes: Sequence[str]) -> list[Variant]:
    """The variants in run order (experiments outer, modes inner); unknown or repeated names are refused."""
    for kind, names, known in (("experiment", experiments, EXPERIMENTS), ("mode", modes, MODES)):
        if not names:
            raise BwskError(f"no {kind} to run (expected some of {', '.join(known)})")
        for name in names:
            if name not in known:
                raise BwskError(f"unknown {kind} {name!r} (expected one of {', '.join(known)})")
        if len(set(names)) != len(names):
            raise BwskError(f"{kind}s {', '.join(names)}: each may appear once")
    return [Variant(experiment, mode) for experiment in experiments for mode in modes]


def run_folder(out: Path, variant: Variant, seed: int) -> Path:
    """Where seed `seed` of `variant` runs: OUT/runs/VARIANT/seed-S (the layout of several seeds of one run)."""
    return seed_folder(out / RUNS / variant.folder, seed)


def run_experiment(
    spec: RunSpec,
    config: TrainConfig,
    out: str | Path,
    *,
    modes: Sequence[str] = DEFAULT_MODES,
    experiments: Sequence[str] = EXPERIMENTS,
    seeds: int = 1,
    force: bool = False,
    progress: bool | None = None,
    observer: Callable[[dict[str, Any]], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the grid and write OUT's layout (see the module docstring); returns what results.json holds.

    `spec`: the start (MODEL), the data and the tokenizer; `config`: the settings every run shares
    (its mode is replaced per variant, its kernels are the reversible variants' seams; seeds are
    config.seed, config.seed + 1, ...); `report`: called with one line after each run (variant, seed,
    test perplexity, peak memory, time); `progress`: on stderr, bars over the runs and of each run on a
    terminal, plain lines elsewhere (None), bars (True), nothing (False); `observer`: sees every run's metrics records.
    """
    out = Path(out)
    variants = variant_grid(tuple(experiments), tuple(modes))
    config.require_seeds(seeds)
    seam_kernels(config.kernels, "reversible" if "reversible" in modes else modes[0], resolve_device(config.device))  # before any run
    _refuse_existing(out, force=force)
    data = prepare_data(spec)
    require_special_tokens(data.tokenizer, spec.tokenizer_path())
    starts = _Starts(spec, data, finetune_modes=[v.mode for v in variants if v.experiment == "finetune"], seed=config.seed)
    chosen = range(config.seed, config.seed + seeds)
    if force and is_main_process():
        _remove_experiment(out)
    runs: dict[str, list[tuple[str, RunResult]]] = {}
    with RunsProgress(len(variants) * seeds, enabled=progress if is_main_process() else False) as bar:
        for variant in variants:
            for seed in chosen:
                folder = run_folder(out, variant, seed)
                start = starts.model_for(variant.experiment, seed)
                bar.start(f"{variant.folder} seed {seed}")
                try:
                    result = train(
                        start.model,
                        data.splits,
                        variant_config(config, variant.mode, seed),
                        folder,
                        pretrained=start.pretrained,
                        source=start.source,
                        tokenizer=data.tokenizer,
                        inputs={"experiment": variant.experiment, "variant": variant.folder, **spec.recorded(), "sha256": data.sha256},
                        force=force,
                        progress=progress,
                        observer=observer,
                    )
                except TrainingDiverged as error:
                    finished = sum(len(found) for found in runs.values())
                    raise ExperimentFailed(
                        f"{variant.folder} seed {seed}: {error}; the experiment stopped: no results for this variant, "
                        f"no variant folders, {RESULTS_JSON} or {CARD} ({finished} finished runs are in {out / RUNS})"
                    ) from None
                except TrainingInterrupted as error:
                    raise TrainingInterrupted(
                        f"interrupted in {variant.folder} seed {seed} at step {error.step}; the experiment wrote no {RESULTS_JSON} "
                        "(run it again with --force to start over)",
                        error.step,
                        error.signum,
                    ) from None
                runs.setdefault(variant.folder, []).append((folder.relative_to(out).as_posix(), result))
                bar.advance()
                if report is not None:
                    report(_run_line(variant, seed, result, done=bar.done, total=bar.total))
    published = {}
    for variant in variants:
        first = run_folder(out, variant, config.seed)
        if is_main_process():
            write_seed_summary(first.parent, [result for _, result in runs[variant.folder]])
            publish_run(first, out / variant.folder)
        published[variant.folder] = publishable_files(first)
    fine_tuned = any(variant.experiment == "finetune" for variant in variants)
    summary = experiment_results(
        model=spec.model, variants=variants, runs=runs, out=out, seeds=seeds, first_seed=config.seed, published=published,
        base_model=_hub_id(spec.model) if fine_tuned else None, dataset=_hub_dataset(spec.data),
    )  # fmt: skip
    if is_main_process():
        write_experiment_outputs(out, summary)  # OUT was checked, and with --force cleared, before the first run
    return summary


def variant_config(config: TrainConfig, mode: str, seed: int) -> TrainConfig:
    """The config of one run of the grid: `config` in `mode` with `seed`; its kernels are the reversible runs' seams,
    so the modes without seams keep the default."""
    kernels = config.kernels if mode == "reversible" else TrainConfig.kernels
    return dataclasses.replace(config, mode=mode, seed=seed, kernels=kernels)


class _Starts:
    """The start model of each run: random from the seed (scratch) or a fresh copy of MODEL's pretrained weights (finetune)."""

    def __init__(self, spec: RunSpec, data: PreparedData, *, finetune_modes: list[str], seed: int):
        self.base = spec.start_model(data, seed=seed)
        if finetune_modes and not self.base.pretrained:
            raise BwskError(
                f"the finetune experiment needs pretrained weights, and {spec.model} has none ({self.base.source}): pass a pretrained "
                "MODEL (a Hugging Face folder or hub id; offline, a folder this tool trained), or run --experiments scratch"
            )
        refused = [mode for mode in finetune_modes if mode != "reversible"]
        if refused and is_reversible(self.base.model):
            raise BwskError(
                f"{spec.model} is a reversible run ({MODEL_TYPE}): the finetune experiment continues it in the reversible mode only, "
                f"not {', '.join(refused)} (its function differs from the plain architecture's); pass --modes reversible, "
                "or --experiments scratch (its architecture, random init, in any mode)"
            )

    def model_for(self, experiment: str, seed: int) -> StartModel:
        if experiment == "finetune":
            return StartModel(copy.deepcopy(self.base.model).train(), True, self.base.source)
        return StartModel(random_init(self.base.model, seed), False, f"{self.base.source}: its architecture, random init (seed {seed})")


def random_init(model: nn.Module, seed: int) -> nn.Module:
    """A model of `model`'s class and config with random weights drawn from `seed` (global RNG untouched), in train mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)._from_config(copy.deepcopy(model.config), attn_implementation="eager")
    return fresh.train()


def _owned_names(out: Path) -> list[Path]:
    """What an experiment in `out` consists of, for every variant any grid could have: its files, variant folders, run folders."""
    every = variant_grid(EXPERIMENTS, MODES)
    task = [out / TASK_FOLDER / name for name in TASK_FILES]  # `--eval lm-eval`'s task
    return [*(out / name for name in EXPERIMENT_FILES), *(out / v.folder for v in every), *(out / RUNS / v.folder for v in every), *task]


def _refuse_existing(out: Path, *, force: bool) -> None:
    """Refuse an OUT that cannot be written, or holds an experiment (any name of `_owned_names`) unless `force`.
    OUT itself is made by its first run, once every check has passed."""
    require_writable(out)
    found = [path for path in _owned_names(out) if path.exists()]
    if found and not force:
        raise BwskError(f"{out}: already holds an experiment ({found[0].relative_to(out).as_posix()}); pass --force to replace it")


def _remove_experiment(out: Path) -> None:
    """--force, after every check: remove the experiment's files, and from each variant folder and run folder the names a
    run owns (folders left empty go too); any other file stays."""
    every = variant_grid(EXPERIMENTS, MODES)
    try:
        for path in (*(out / name for name in EXPERIMENT_FILES), *(out / RUNS / v.folder / SEEDS_FILE for v in every)):
            path.unlink(missing_ok=True)
        for name in TASK_FILES:
            (out / TASK_FOLDER / name).unlink(missing_ok=True)
        if (out / TASK_FOLDER).is_dir() and not any((out / TASK_FOLDER).iterdir()):
            (out / TASK_FOLDER).rmdir()
        for variant in every:
            published, runs = out / variant.folder, out / RUNS / variant.folder
            for folder in (published, runs):  # an earlier layout kept the other seeds' runs in VARIANT/seed-S
                if folder.is_dir():
                    remove_seed_runs(folder)
            if published.is_dir():
                remove_owned(published)
            if runs.is_dir() and not any(runs.iterdir()):
                runs.rmdir()
        if (out / RUNS).is_dir() and not any((out / RUNS).iterdir()):
            (out / RUNS).rmdir()
    except OSError as error:
        raise BwskError(f"{out}: cannot remove the earlier experiment ({error.strerror or error})") from None


def _hub_id(name: str) -> str | None:
    """`name` when it reads as a Hugging Face Hub id (owner/name) and names no local file or folder; else None."""
    return name if _HUB_ID.fullmatch(name) and not Path(name).exists() else None


def _hub_dataset(data: str) -> str | None:
    """The Hub dataset `data` names (its name without the config) when it is not a local path; None for local data."""
    return None if Path(data).exists() else data.split(":")[0]


def _run_line(variant: Variant, seed: int, result: RunResult, *, done: int, total: int) -> str:
    """One finished run: which, test perplexity, peak memory, wall time, steps."""
    memory = "n/a" if result.peak_memory_bytes is None else human_bytes(result.peak_memory_bytes)
    return (
        f"run {done}/{total} {variant.folder} seed {seed}: test ppl {result.test_perplexity:.2f}, peak {memory}, "
        f"{result.wall_seconds:.1f} s, {result.steps} steps"
    )
