"""`run_experiment`: the grid of experiments (fine-tune, scratch) x training modes x seeds, in the earlier work's layout.

    spec = RunSpec("runs/base", "data/wikitext-2", split="proxy")      # MODEL: the pretrained start
    run_experiment(spec, TrainConfig(max_steps=200), Path("out"), seeds=3)

writes
    OUT/results.json                  every run, and per variant the mean and spread over seeds
    OUT/README.md                     the model card: tables, noise floor, configuration, method, plots
    OUT/loss_curves.png, OUT/peak_memory.png
    OUT/finetune-conventional/        the first seed's run: model.safetensors, config.json, tokenizer files,
    OUT/finetune-bwsk-analyzed/       training_results.json, metrics.jsonl, run.json, checkpoints/
    OUT/finetune-bwsk-reversible/     (the reversible model type loads after `bwsk.register()`)
    OUT/scratch-.../                  ...; the other seeds' runs in VARIANT/seed-N/, in the same layout

Starts: "scratch" draws MODEL's architecture at random from each run's seed (the same
initial weights for every mode of one seed); "finetune" starts every run from MODEL's
pretrained weights, and is refused when MODEL has none (a zoo name: random init), or
when MODEL is a reversible run and a finetune mode is another (the function would change). A run
whose loss turns NaN or infinite stops the experiment: `ExperimentFailed` names the
variant and seed, and neither results.json nor README.md is written.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bwsk.errors import BwskError
from bwsk.render.units import human_bytes
from bwsk.training.distributed import is_main_process, resolve_device
from bwsk.training.experiments.report import RESULTS_JSON, experiment_results, write_experiment_outputs
from bwsk.training.experiments.runs import PreparedData, RunSpec, prepare_data
from bwsk.training.experiments.start import StartModel
from bwsk.training.modes import MODES
from bwsk.training.modes.apply import is_reversible, seam_kernels
from bwsk.training.reversible.huggingface import MODEL_TYPE
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.interrupt import TrainingInterrupted
from bwsk.training.trainer.optimizer import TrainingDiverged
from bwsk.training.trainer.progress import RunsProgress
from bwsk.training.trainer.run import train
from bwsk.training.trainer.run_folder import RUN_FILE, RunResult, require_writable

EXPERIMENTS = ("finetune", "scratch")
DEFAULT_MODES = ("conventional", "analyzed", "reversible")
SEED_FOLDER = "seed-{}"


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


def run_folder(out: Path, variant: Variant, index: int, seed: int) -> Path:
    """Where seed number `index` (value `seed`) of `variant` runs: the variant folder for the first, a subfolder for the others."""
    folder = out / variant.folder
    return folder if index == 0 else folder / SEED_FOLDER.format(seed)


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
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the grid and write OUT's layout (see the module docstring); returns what results.json holds.

    `spec`: the start (MODEL), the data and the tokenizer; `config`: the settings every run shares
    (its mode is replaced per variant, its kernels are the reversible variants' seams; seeds are
    config.seed, config.seed + 1, ...); `report`: called with one line after each run (variant, seed,
    test perplexity, peak memory, time); `progress`: progress bars on stderr, over the runs and of each
    run (None: when stderr is a TTY).
    """
    out = Path(out)
    variants = variant_grid(tuple(experiments), tuple(modes))
    config.require_seeds(seeds)
    seam_kernels(config.kernels, "reversible" if "reversible" in modes else modes[0], resolve_device(config.device))  # before any run
    _check_out(out, variants, force=force)
    data = prepare_data(spec)
    starts = _Starts(spec, data, finetune_modes=[v.mode for v in variants if v.experiment == "finetune"], seed=config.seed)
    runs: dict[str, list[tuple[str, RunResult]]] = {}
    with RunsProgress(len(variants) * seeds, enabled=progress if is_main_process() else False) as bar:
        for variant in variants:
            for index in range(seeds):
                seed = config.seed + index
                folder = run_folder(out, variant, index, seed)
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
                    )
                except TrainingDiverged as error:
                    finished = sum(len(found) for found in runs.values())
                    raise ExperimentFailed(
                        f"{variant.folder} seed {seed}: {error}; the experiment stopped: no results for this variant, "
                        f"no {RESULTS_JSON} or README.md ({finished} finished runs are in their folders)"
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
    summary = experiment_results(model=spec.model, variants=variants, runs=runs, out=out, seeds=seeds, first_seed=config.seed)
    write_experiment_outputs(out, summary, force=force)
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


def _check_out(out: Path, variants: list[Variant], *, force: bool) -> None:
    """Refuse an OUT that holds an experiment, or cannot be written, unless `force`; with `force`, remove the extra seed
    folders of this grid's variants. OUT itself is made by its first run, once every check has passed."""
    require_writable(out)
    found = [name for name in (RESULTS_JSON, *(v.folder for v in variants)) if (out / name).exists()]
    if found and not force:
        raise BwskError(f"{out}: already holds an experiment ({found[0]}); pass --force to replace it")
    for variant in variants:
        for extra in (out / variant.folder).glob(SEED_FOLDER.format("*")):
            if (extra / RUN_FILE).is_file():
                shutil.rmtree(extra)


def _run_line(variant: Variant, seed: int, result: RunResult, *, done: int, total: int) -> str:
    """One finished run: which, test perplexity, peak memory, wall time, steps."""
    memory = "n/a" if result.peak_memory_bytes is None else human_bytes(result.peak_memory_bytes)
    return (
        f"run {done}/{total} {variant.folder} seed {seed}: test ppl {result.test_perplexity:.2f}, peak {memory}, "
        f"{result.wall_seconds:.1f} s, {result.steps} steps"
    )
