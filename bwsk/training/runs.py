"""Runs from what the user names: `RunSpec` (model, data, tokenizer) + `TrainConfig` -> a run folder.

    spec = RunSpec(model="pythia-70m", data="../shared/data/wikitext-2", split="proxy", tokenizer="tok.json")
    result = run_training(spec, TrainConfig(mode="analyzed", seed=1), Path("runs/analyzed"))
    result = resume_training(Path("runs/analyzed"))          # after a kill or Ctrl-C
    results, summary = run_seeds(spec, config, Path("runs/a"), seeds=3)   # runs/a/seed-0, seed-1, seed-2

The spec is stored in the run's run.json, so `resume_training` rebuilds the run from
the folder alone. `prepare_data` loads and tokenizes once for callers that train several
variants on the same data (pass its result as `data=`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bwsk.atomic import write_atomic
from bwsk.errors import SourceError
from bwsk.training.config import TrainConfig
from bwsk.training.data import TokenSplits, load_text_splits, load_tokenizer, tokenize_splits
from bwsk.training.distributed import is_main_process
from bwsk.training.results import RunResult, summarize
from bwsk.training.run_folder import read_run_file
from bwsk.training.start import load_start_model
from bwsk.training.trainer import train

SEEDS_FILE = "seeds.json"


@dataclass(frozen=True)
class RunSpec:
    """What a run starts from: MODEL (zoo name, HF folder or Hub id, earlier run), DATA and its split rule, the tokenizer.

    `tokenizer` None: the model folder's tokenizer.json. `tiny`/`layers` shape a zoo model.
    """

    model: str
    data: str
    split: str | None = None
    dataset_config: str | None = None
    tokenizer: str | None = None
    tiny: bool = False
    layers: int | None = None
    trust_remote_code: bool = False

    def tokenizer_path(self) -> Path:
        if self.tokenizer is not None:
            return Path(self.tokenizer)
        beside = Path(self.model) / "tokenizer.json"
        if beside.is_file():
            return beside
        raise SourceError(f"{self.model}: no tokenizer.json beside the model; pass --tokenizer PATH/tokenizer.json")


@dataclass(frozen=True)
class PreparedData:
    """A tokenizer and the data tokenized with it."""

    tokenizer: Any
    splits: TokenSplits


def prepare_data(spec: RunSpec) -> PreparedData:
    """Load the tokenizer and the three splits named by `spec`, tokenized."""
    texts = load_text_splits(spec.data, spec.split, dataset_config=spec.dataset_config)
    tokenizer = load_tokenizer(spec.tokenizer_path())
    return PreparedData(tokenizer, tokenize_splits(texts, tokenizer))


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
    data = data or prepare_data(spec)
    start = load_start_model(
        spec.model,
        vocab_size=data.splits.vocab_size,
        tiny=spec.tiny,
        layers=spec.layers,
        seed=config.seed,
        trust_remote_code=spec.trust_remote_code,
    )
    return train(
        start.model,
        data.splits,
        config,
        out,
        pretrained=start.pretrained,
        source=f"{spec.model} ({start.source})",
        tokenizer=data.tokenizer,
        inputs=dataclasses.asdict(spec),
        resume=resume,
        force=force,
        progress=progress,
        observer=observer,
    )


def resume_training(out: Path, *, progress: bool | None = None, observer: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Continue the run in `out` from its latest checkpoint, with the spec and config its run.json records."""
    document = read_run_file(out)
    try:
        spec = RunSpec(**document["inputs"])
    except TypeError:
        raise SourceError(f"{out}: run.json does not name the run's inputs (it was not started by bwsk-train)") from None
    return run_training(spec, TrainConfig.from_json(document["config"]), out, progress=progress, observer=observer, resume=True)


def run_seeds(
    spec: RunSpec, config: TrainConfig, out: Path, *, seeds: int, force: bool = False, progress: bool | None = None
) -> tuple[list[RunResult], dict[str, Any]]:
    """`seeds` runs with seeds config.seed, config.seed + 1, ... in `out/seed-S/`; the summary (mean, spread) goes to seeds.json."""
    data = prepare_data(spec)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / SEEDS_FILE
    if summary_path.exists() and not force:
        raise SourceError(f"{summary_path}: already exists (pass --force to replace it)")
    results = []
    for offset in range(seeds):
        seeded = dataclasses.replace(config, seed=config.seed + offset)
        results.append(run_training(spec, seeded, out / f"seed-{seeded.seed}", data=data, force=force, progress=progress))
    summary = seed_summary(results)
    if is_main_process():  # distributed runs: rank 0 writes
        write_atomic(str(summary_path), json.dumps(summary, indent=2, allow_nan=False) + "\n", force=True)
    return results, summary


def seed_summary(results: list[RunResult]) -> dict[str, Any]:
    """Mean and spread over runs of one variant: perplexities, final losses, peak memory, throughput."""
    fields = {
        "valid_perplexity": [r.valid_perplexity for r in results],
        "test_perplexity": [r.test_perplexity for r in results],
        "final_train_loss": [r.final_train_loss for r in results],
        "tokens_per_s": [r.tokens_per_s for r in results],
        "wall_seconds": [r.wall_seconds for r in results],
    }
    if all(r.peak_memory_bytes is not None for r in results):
        fields["peak_memory_bytes"] = [float(r.peak_memory_bytes) for r in results]
    return {"seeds": [r.seed for r in results], "mode": results[0].mode, **{name: summarize(v) for name, v in fields.items()}}
