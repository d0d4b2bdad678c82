"""The run folder: what a run writes, and the rule that nothing in it is replaced without --force.

A run folder holds `run.json` (the configuration and the inputs, absolute paths and content
hashes, and the bwsk version; written first: what `--resume` reads), `metrics.jsonl`, `checkpoints/`, and once finished the model as a
Hugging Face folder (config.json, model.safetensors, tokenizer files) and
`training_results.json`. `--force` removes only these names, never other files.

`MetricsLog`: the run's metrics as JSON lines (`metrics.jsonl`), one object per training step or evaluation,
appended and flushed. A checkpoint records the file's length; resuming truncates the file to it, so the
lines of a resumed run are those of an uninterrupted one (timing fields aside).

`RunResult`: what a finished run reports (`training_results.json`); only a run that finished with finite
losses writes one. `summarize`: the mean and spread of a quantity over seeds.

`save_model(model, folder, tokenizer=...)`: a trained model as a Hugging Face folder (safetensors weights,
config, tokenizer). Files are written into a temporary folder beside `folder` and moved in one by one
(each move atomic), so `folder` never holds a half-written file. A model without
`save_pretrained` is saved as `model.safetensors` alone.

Reversible models are written as the `bwsk_reversible` model type (`bwsk.training.reversible.huggingface`):
the folder loads with `AutoModelForCausalLM` after `bwsk.register()`, or without bwsk with
`trust_remote_code=True` (its own `modeling_bwsk_reversible.py`), and computes the function that was trained.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError, SourceError, first_line
from bwsk.frontend.hugging_face import isolated_transformers
from bwsk.frontend.zoo import max_positions
from bwsk.training.kv_cache import cache_on_for_saving
from bwsk.training.modes.apply import is_reversible
from bwsk.training.reversible.huggingface import MODEL_TYPE
from bwsk.training.reversible.remote_code import MODELING_FILE
from bwsk.training.trainer.checkpoint import save_weights, write_tensors
from bwsk.training.trainer.data import special_tokens
from bwsk.training.trainer.field_types import is_count
from bwsk.training.trainer.optimizer import TrainingDiverged
from bwsk.training.trainer.state import LoopState

if TYPE_CHECKING:
    from bwsk.training.trainer.config import TrainConfig
    from bwsk.training.trainer.data import TokenSplits
    from bwsk.training.trainer.evaluation import Perplexity

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
RESULTS_FILE = "training_results.json"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    MODELING_FILE,  # a reversible model's own code (`bwsk.training.reversible.remote_code`)
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


TIMING_FIELDS = ("tokens_per_s", "step_seconds", "seconds", "peak_memory_bytes")


class MetricsLog:
    """Appends records to `path` (flushed per record); `sync()` makes them durable and returns the length to checkpoint."""

    def __init__(self, path: Path, *, resume_at: int | None = None):
        self.path = path
        try:
            if resume_at is not None:
                if not path.is_file() or path.stat().st_size < resume_at:
                    raise SourceError(f"{path}: shorter than the checkpoint recorded ({resume_at} bytes); cannot resume its metrics")
                with open(path, "r+b") as stream:
                    stream.truncate(resume_at)
            self._stream = open(path, "ab")
        except OSError as error:
            raise SourceError(f"{path}: cannot write ({error.strerror or error})") from None

    def append(self, record: dict[str, Any]) -> None:
        """Write `record`; a NaN or infinite value in it is a diverged run (`TrainingDiverged`), never a line of the file."""
        bad = [key for key, value in record.items() if isinstance(value, float) and not math.isfinite(value)]
        if bad:
            raise TrainingDiverged(f"{bad[0]} is {record[bad[0]]} at step {record.get('step')}; the run stopped, no results were written")
        self._stream.write((json.dumps(record, allow_nan=False) + "\n").encode())
        self._stream.flush()

    def sync(self) -> int:
        """Force the records to disk; the file's length."""
        self._stream.flush()
        os.fsync(self._stream.fileno())
        return self._stream.tell()

    def close(self) -> None:
        self._stream.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics file, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def without_timing(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that depend on the machine's speed (what two identical runs share)."""
    return {key: value for key, value in record.items() if key not in TIMING_FIELDS}


@dataclass(frozen=True)
class RunResult:
    """One run: its inputs, its evaluation, its cost. Memory in bytes, times in seconds."""

    model: str
    start: str  # "fine-tune" (pretrained weights) or "scratch" (random init)
    mode: str
    seed: int
    config: dict[str, Any]
    data: str
    tokens: dict[str, int]
    perplexity_method: str
    valid: dict[str, Any]
    test: dict[str, Any]
    steps: int
    epochs_completed: int
    stopped: str  # "max steps (N)", "epochs (N)", or "early stopping (patience P)": P validations without a better loss
    best_valid_step: int
    final_train_loss: float
    final_valid_loss: float
    peak_memory_bytes: int | None
    peak_memory_source: str
    tokens_per_s: float
    train_seconds: float
    wall_seconds: float
    device: str
    drift: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None
    analyzed_plan: dict[str, Any] | None = None  # the analyzed mode's budget, byte target and plan (`SelectivePlan.summary`)
    saved_model: str = ""
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1  # processes of a distributed run (`config["distributed"]`: ddp or fsdp)
    peak_memory_per_rank: list[int] | None = None  # each process's peak, in rank order; peak_memory_bytes is their maximum

    @classmethod
    def from_run(cls, state: LoopState, config: TrainConfig, splits: TokenSplits, test: Perplexity, **reported: Any) -> RunResult:
        """The result of a finished run: its loop state, resolved config, data and test evaluation, and the `reported`
        fields the loop alone knows (model, start, stopped, device, wall_seconds, conversion, analyzed_plan, saved_model,
        world_size, peak_memory_per_rank)."""
        best = next(e for e in state.evaluations if e["step"] == state.best_step)
        peaks = reported.get("peak_memory_per_rank")
        return cls(
            mode=config.mode,
            seed=config.seed,
            config=config.to_json(),
            data=splits.description,
            tokens=splits.counts(),
            perplexity_method=test.method,
            valid={"step": best["step"], "perplexity": best["perplexity"], "nll_per_token": best["nll"]},
            test={**test.to_json(), "step": state.best_step},
            steps=state.step,
            epochs_completed=state.epoch,
            best_valid_step=state.best_step,
            final_train_loss=state.last_loss,
            final_valid_loss=best["nll"],
            peak_memory_bytes=max(peaks) if peaks else None,
            peak_memory_source=state.peak_memory_source,
            tokens_per_s=state.tokens / state.train_seconds if state.train_seconds else 0.0,
            train_seconds=state.train_seconds,
            drift=state.drift,
            evaluations=state.evaluations,
            **reported,
        )

    @property
    def valid_perplexity(self) -> float:
        return self.valid["perplexity"]

    @property
    def test_perplexity(self) -> float:
        return self.test["perplexity"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: Path) -> Path:
        path = folder / RESULTS_FILE
        write_atomic(str(path), json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n", force=True)
        return path


def read_result(folder: Path) -> RunResult:
    """The `RunResult` a run wrote into `folder`."""
    return RunResult(**json.loads((folder / RESULTS_FILE).read_text()))


def summarize(values: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value), min, max and count of `values` (all finite)."""
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"summarize needs finite values, got {values}")
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": spread, "min": min(values), "max": max(values), "n": len(values)}


def save_model(model: nn.Module, folder: Path, *, tokenizer=None, weights: dict[str, torch.Tensor] | None = None) -> str:
    """Write `model` (and the `tokenizers.Tokenizer`, if given) into `folder`; returns what was saved, in words.

    `weights`: the model's whole state dict, to write instead of the model's own tensors (an FSDP2 model
    holds only its shard; rank 0 passes the gathered state and alone calls this).
    """
    staging = folder / f".tmp-model-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with isolated_transformers():
            described = _write(model, staging, tokenizer, weights)
        for item in staging.iterdir():
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return described


def _write(model: nn.Module, folder: Path, tokenizer, weights: dict[str, torch.Tensor] | None) -> str:
    if tokenizer is not None:
        _write_tokenizer(tokenizer, folder, model)
        _agree_with_tokenizer(model, tokenizer)
    if hasattr(model, "save_pretrained"):
        with cache_on_for_saving(model):  # saved for inference: use_cache as the config's default, not training's False
            model.save_pretrained(str(folder), state_dict=weights)  # a reversible model writes its own type (`SaveAsReversible`)
        return f"{MODEL_TYPE if is_reversible(model) else type(model).__name__} via save_pretrained (safetensors)"
    if weights is not None:
        write_tensors(weights, folder / "model.safetensors")
    else:
        save_weights(model, folder / "model.safetensors")
    return f"{type(model).__name__} weights (safetensors; no config: not a Hugging Face model)"


def _agree_with_tokenizer(model: nn.Module, tokenizer) -> None:
    """The model's config and generation config take the saved tokenizer's eos/bos/pad ids, so `generate()` stops where
    the tokenizer (and an evaluation harness reading it) says text ends. Nothing changes without an eos token."""
    ids = {f"{kind}_id": tokenizer.token_to_id(token) for kind, token in special_tokens(tokenizer).items()}
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        if config is not None:
            for name, value in ids.items():
                setattr(config, name, value)


def _write_tokenizer(tokenizer, folder: Path, model: nn.Module) -> None:
    """The tokenizer as Hugging Face files, with its eos/bos/pad (`special_tokens`; none when it has no end-of-text token)
    and, when the model has a position limit, that limit as `model_max_length` (what evaluation harnesses window by)."""
    from transformers import PreTrainedTokenizerFast

    config = getattr(model, "config", None)
    positions = max_positions(getattr(config, "text_config", config))
    limit = {} if positions is None else {"model_max_length": positions}
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special_tokens(tokenizer), **limit).save_pretrained(str(folder))
