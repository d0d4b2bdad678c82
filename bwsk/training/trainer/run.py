"""`train(model, splits, config, out, ...)`: one training run of a causal LM in one of the four modes.

    result = train(model, splits, TrainConfig(mode="reversible", seed=1), Path("runs/rev"), pretrained=False)

The loop: AdamW (no weight decay on biases and norms), linear warmup then cosine,
gradient clipping, autocast (bf16; fp16 with a gradient scaler on CUDA; or fp32),
validation each epoch (or every `eval_every` steps) with early stopping, and at the
end the test split, both as token-weighted perplexity (`bwsk.training.trainer.evaluation`),
evaluated with the weights of the best validation loss.

Invariants:
  - a non-finite loss (or, without a gradient scaler, gradient norm) stops the run with
    `TrainingDiverged` naming the step, before the optimizer uses it (`bwsk.training.trainer.optimizer`);
    no results, no model; so does a non-finite validation loss;
  - data order and RNG depend only on the seed and the step, and a checkpoint holds
    everything else, so a run resumed from any checkpoint ends with the weights and
    metrics (timing fields aside) of the uninterrupted run;
  - SIGINT (Ctrl-C) or SIGTERM finishes the current step, writes a checkpoint and raises
    `TrainingInterrupted`, whose message is the command that resumes (under torchrun, the
    same launcher: `bwsk.training.trainer.interrupt`); a second signal, or one during an evaluation,
    interrupts at once (`bwsk.training.trainer.interrupt`);
  - a checkpoint is checked against the run before it is loaded (`bwsk.training.trainer.checkpoint`);
  - a checkpoint folder loads with `AutoModelForCausalLM` as the function being trained
    (a reversible run's as the `bwsk_reversible` model type);
  - peak memory is the CUDA allocator's maximum over training steps, or on the cpu
    MemTracker's count over the first training step this process runs; evaluation is
    not included (`bwsk.training.trainer.state`).

Distributed (`config.distributed`, under torchrun; `bwsk.training.distributed`): each process
trains on its own `batch_size` blocks (`BlockSampler` shards the data), DDP or FSDP2 averages
the gradients, so a step equals one process's step on the global batch. Rank 0 alone writes
files (run folder, metrics, checkpoints of the whole state, the model, results); every rank
evaluates the whole split (an FSDP2 forward is a collective) and rank 0's figures decide; the
logged loss is the mean over ranks; a run resumes only on as many processes as it ran on.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bwsk.errors import BwskError
from bwsk.frontend.zoo import max_positions
from bwsk.training.distributed import (
    DistInfo,
    WholeState,
    all_reduce_mean,
    broadcast_from_main,
    describe_device,
    join_process_group,
    resolve_device,
    run_on_main,
    synchronized_time,
    unwrap_model,
    wrap_model,
)
from bwsk.training.modes.apply import applied_mode, apply_mode, require_mode_fits, seam_kernels
from bwsk.training.reversible.huggingface import saved_config
from bwsk.training.trainer.checkpoint import BestWeights, restore_run_state, save_run_state
from bwsk.training.trainer.config import TrainConfig
from bwsk.training.trainer.data import BlockSampler, TokenSplits
from bwsk.training.trainer.evaluation import Perplexity, perplexity
from bwsk.training.trainer.interrupt import InterruptFlag, TrainingInterrupted, resume_command, stopped_by
from bwsk.training.trainer.optimizer import OptimizerStep, TrainingDiverged, require_precision_fits
from bwsk.training.trainer.progress import TrainingProgress
from bwsk.training.trainer.run_folder import (
    CHECKPOINTS,
    METRICS_FILE,
    MetricsLog,
    RunResult,
    prepare_new,
    read_run_file,
    require_writable,
    save_model,
    write_run_file,
)
from bwsk.training.trainer.state import EarlyStopping, LoopState, exclude_evaluation, record_step_peak, step_tracker


def train(
    model: nn.Module,
    splits: TokenSplits,
    config: TrainConfig,
    out: Path,
    *,
    pretrained: bool,
    source: str = "",
    tokenizer=None,
    inputs: dict[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool | None = None,
    observer: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train `model` (a fresh start: the mode is applied here) and write the run folder `out`; returns its result.

    `inputs` (JSON) is stored in run.json for the caller to rebuild the run on `resume`
    (which needs the same `config`); `observer` sees every metrics record as it is written;
    `progress`: on stderr, a bar on a terminal and plain lines elsewhere (None), a bar (True) or nothing (False). Every refusal comes before the folder
    is touched: a folder that cannot be written, seams that cannot run on the run's device (`config.kernels`,
    see `bwsk.training.modes.apply.seam_kernels`), a sequence the model cannot take, a checkpoint that does not fit.
    """
    out = Path(out)
    require_writable(out)  # every check comes before the folder is made: a refused run leaves none behind
    require_mode_fits(model, config.mode)
    info = join_process_group(config.distributed, config.device)
    world_size = 1 if info is None else info.world_size
    seam_kernels(config.kernels, config.mode, resolve_device(config.device) if info is None else info.device)  # the seams run here

    def prepare_folder() -> None:
        if not resume:
            prepare_new(out, force=force)
            return
        saved = read_run_file(out)
        if TrainConfig.from_json(saved["config"]) != config:
            raise BwskError(f"{out}: the configuration differs from the run being resumed (resume with the run's own run.json)")
        if saved.get("world_size", 1) != world_size:
            raise BwskError(
                f"{out}: the run trained on {saved.get('world_size', 1)} process(es) and resumes only on as many (this job has {world_size})"
            )

    run = Run(model, splits, config, out, pretrained=pretrained, tokenizer=tokenizer, observer=observer, info=info)
    run_on_main(prepare_folder, info)
    if not resume and run.whole.is_main:
        document = {"config": config.to_json(), "resolved": run.config.to_json(), "pretrained": pretrained, "source": source}
        if run.analyzed_plan is not None:
            document["analyzed_plan"] = run.analyzed_plan
        write_run_file(out, {**document, "world_size": world_size, "data": splits.description, "inputs": inputs or {}})
    return run.execute(resume=resume, progress=progress, source=source)


class Run:
    """One run's model, optimizer, data and loop state (see `train`): setup, the loop, one step, evaluation."""

    def __init__(self, model, splits: TokenSplits, config: TrainConfig, out: Path, *, pretrained, tokenizer, observer, info=None):
        self.info: DistInfo | None = info
        self.device = resolve_device(config.device) if info is None else info.device
        rank, self.world_size = (0, 1) if info is None else (info.rank, info.world_size)
        require_precision_fits(config.precision, self.device)
        require_vocabulary_fits(model, splits)
        positions = max_positions(getattr(model, "config", None))
        steps_per_epoch = (splits.train.numel() // config.sequence_length(positions)) // (config.batch_size * self.world_size)
        self.config = config.resolved(pretrained=pretrained, max_positions=positions, steps_per_epoch=steps_per_epoch)
        self.splits, self.out, self.tokenizer, self.observer, self.pretrained = splits, out, tokenizer, observer, pretrained
        self.sampler = BlockSampler(splits.train, self.config.seq_len, self.config.batch_size, self.config.seed, rank, self.world_size)
        self.planned = self.config.planned_steps(self.sampler.batches_per_epoch)
        self.dtype = self.config.autocast_dtype
        self.model = self._model_in_mode(model)
        plan = applied_mode(unwrap_model(self.model)).plan
        self.analyzed_plan = None if plan is None else plan.summary()  # the budget, the byte target it meant, the plan
        self.runtime = self._reversible_runtime()
        self.update = OptimizerStep(self.model, self.config, planned_steps=self.planned, device=self.device, info=info)
        self.whole = WholeState(self.model, self.update.optimizer, info)
        self.best = BestWeights(out / CHECKPOINTS, self.whole)
        self.early_stopping = EarlyStopping(self.config.patience)
        self.state = LoopState()
        self.sigint = InterruptFlag(distributed=info is not None)
        self.metrics: MetricsLog | None = None  # rank 0's, opened by `execute`
        self.bar: TrainingProgress | None = None
        self.started = time.perf_counter()  # minus the wall seconds of earlier sessions, once `execute` knows them

    def _model_in_mode(self, model: nn.Module) -> nn.Module:
        example = next(self.sampler.batches(0)).to(self.device)
        if getattr(getattr(model, "config", None), "use_cache", None):
            model.config.use_cache = False  # a KV cache is of no use in training, and checkpoint recomputes would extend it
        config = self.config
        model = apply_mode(
            model.to(self.device).train(),
            config.mode,
            example_input=(example,),
            dtype=self.dtype,
            budget=config.budget,
            kernels=config.kernels,
        )
        return model if self.info is None else wrap_model(model, config.distributed, self.info)

    def _reversible_runtime(self):
        if self.config.mode != "reversible":
            return None
        from bwsk.training.reversible.convert import reversible_runtime
        from bwsk.training.reversible.drift import DriftMonitor

        runtime = reversible_runtime(unwrap_model(self.model))
        runtime.stack.monitor = DriftMonitor(every=self.config.drift_every, tolerance=self.config.drift_tolerance)
        return runtime

    # --- the loop -------------------------------------------------------------------------------------------

    def execute(self, *, resume: bool, progress: bool | None, source: str) -> RunResult:
        if resume:
            self.state, scaler = restore_run_state(
                self.out / CHECKPOINTS,
                self.whole,
                scaler=self.update.scaler_state(),
                batches_per_epoch=self.sampler.batches_per_epoch,
                world_size=self.world_size,
            )
            self.update.load_scaler_state(scaler)
        else:
            torch.manual_seed(self.config.seed + (0 if self.info is None else self.info.rank))
        self.started -= self.state.wall_seconds
        if self.runtime is not None:
            self.runtime.stack.monitor.step = self.state.step
        main = self.whole.is_main
        self.metrics = MetricsLog(self.out / METRICS_FILE, resume_at=self.state.metrics_bytes if resume else None) if main else None
        try:
            with TrainingProgress(self.planned, start=self.state.step, enabled=progress if main else False) as self.bar, self.sigint:
                stopped = self._validate() if self.state.pending_validation else None
                return self._finish(stopped or self._loop(), source)
        finally:
            if self.metrics is not None:
                self.metrics.close()

    def _loop(self) -> str:
        config, state = self.config, self.state
        while True:
            if state.step >= self.planned:
                return f"max steps ({self.planned})" if config.max_steps is not None else f"epochs ({config.epochs})"
            for batch in self.sampler.batches(state.epoch, state.batch):
                self._train_step(batch)
                state.batch += 1
                stopped = self._after_step()
                if stopped or state.step >= self.planned:
                    break
            else:
                stopped = None
            if stopped:
                return stopped
            if state.batch == self.sampler.batches_per_epoch:
                state.epoch, state.batch = state.epoch + 1, 0
                if config.eval_every is None and (stopped := self._validate()):
                    return stopped

    def _train_step(self, batch: torch.Tensor) -> None:
        state, device = self.state, self.device
        lr = self.update.set_learning_rate(state.step)
        ids = batch.to(device, non_blocking=True)
        tracker = step_tracker(device, state, self.model, self.update.optimizer)
        start = synchronized_time(device)
        with tracker if tracker is not None else contextlib.nullcontext():
            loss, norm = self.update(ids, state.step + 1, lr)
        seconds = synchronized_time(device) - start
        record_step_peak(state, device, tracker, state.step + 1)
        tokens = ids.numel() * self.world_size
        state.step += 1
        state.tokens += tokens
        state.train_seconds += seconds
        state.last_loss = loss
        record = {"step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr, "grad_norm": norm}
        record |= {"tokens_per_s": tokens / seconds, "step_seconds": seconds, "peak_memory_bytes": state.peak_memory_bytes}
        drift = self.runtime.last_drift if self.runtime is not None else None
        if drift is not None and (state.drift is None or state.drift["step"] != drift.step):
            state.drift = {"step": drift.step, "max_relative_error": drift.max_error}
            record["drift_max_relative_error"] = drift.max_error
            record |= self.runtime.stack.drift_record(drift)
        self._record(record)
        self.bar.update(state.step, loss=loss, tokens_per_s=tokens / seconds, memory=state.peak_memory_bytes)

    def _after_step(self) -> str | None:
        config, state = self.config, self.state
        stopped = self._validate() if config.eval_every is not None and state.step % config.eval_every == 0 else None
        if state.step % config.checkpoint_every == 0:
            self._checkpoint()
        if self.info is not None:  # every rank stops at the same step
            self.sigint.raised = all_reduce_mean(float(self.sigint.raised), self.info) > 0
        if self.sigint.raised:
            self._checkpoint()
            raise self._interrupted(f"at step {state.step}")
        return stopped

    def _interrupted(self, when: str) -> TrainingInterrupted:
        command = resume_command(self.out, distributed=self.info is not None)
        message = f"{stopped_by(self.sigint.signum)} {when}; checkpoint saved (continue with: {command})"
        return TrainingInterrupted(message, self.state.step, self.sigint.signum)

    # --- evaluation, checkpoints, results --------------------------------------------------------------------

    def evaluate(self, split: str) -> Perplexity:
        """Token-weighted perplexity of the current weights on `split` ("valid" or "test")."""
        config = self.config
        precision = "fp32" if self.dtype is None else f"{config.precision} autocast"
        with self.sigint.at_once():
            result = perplexity(
                self.model,
                getattr(self.splits, split),
                window=config.eval_window,
                stride=config.eval_stride,
                batch_size=config.eval_batch_size,
                dtype=self.dtype,
                precision=precision,
            )
        return result if self.info is None else broadcast_from_main(result, self.info)  # every rank computed it; rank 0's decides

    def _validate(self) -> str | None:
        """Evaluate on the validation split; keeps the best weights; the stop reason once patience runs out."""
        state = self.state
        if state.evaluations and state.evaluations[-1]["step"] == state.step:
            return None
        start = time.perf_counter()
        state.pending_validation = False
        try:
            result = self.evaluate("valid")
        except KeyboardInterrupt:
            state.pending_validation = True
            self._checkpoint()
            raise self._interrupted(f"during the validation at step {state.step}") from None
        exclude_evaluation(self.device)
        if not (math.isfinite(result.nll) and math.isfinite(result.perplexity)):  # before it reaches a file
            raise TrainingDiverged(
                f"the validation loss is {result.nll} (perplexity {result.perplexity}) at step {state.step}; "
                "the run stopped, no results were written"
            )
        record = {"step": state.step, "split": "valid", "nll": result.nll, "perplexity": result.perplexity}
        state.evaluations.append(record)
        self._record({**record, "seconds": time.perf_counter() - start})
        self.bar.note(f"step {state.step}: valid loss {result.nll:.4f}, perplexity {result.perplexity:.2f}")
        if self.early_stopping.improved(state, result.nll):
            self.best.save()
            return None
        return self.early_stopping.stop_reason(state)

    def _checkpoint(self) -> None:
        """Write the whole state (a collective: every rank calls; rank 0 writes)."""
        state = self.state
        if state.peak_memory_bytes is not None:
            state.peak_memory_per_rank = self.whole.per_rank(state.peak_memory_bytes)
        state.wall_seconds = time.perf_counter() - self.started
        if self.metrics is not None:
            state.metrics_bytes = self.metrics.sync()
        config = saved_config(unwrap_model(self.model))
        save_run_state(self.out / CHECKPOINTS, state, self.whole, scaler=self.update.scaler_state(), model_config=config)

    def _record(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.append(record)
        if self.observer is not None:
            self.observer(record)

    def _finish(self, stopped: str, source: str) -> RunResult:
        """The last validation and checkpoint, the best weights back, the test split, the model and the results written."""
        state, whole = self.state, self.whole
        self._validate()
        self._checkpoint()
        if state.best_step != state.step:
            self.best.restore()
        test = self.evaluate("test")
        self._record({"step": state.best_step, "split": "test", "nll": test.nll, "perplexity": test.perplexity})
        weights = whole.weights() if self.info is not None else None  # an FSDP2 rank holds only its shard
        peaks = whole.per_rank(state.peak_memory_bytes) if state.peak_memory_bytes is not None else None
        saved = save_model(unwrap_model(self.model), self.out, tokenizer=self.tokenizer, weights=weights) if whole.is_main else ""
        result = RunResult.from_run(
            state,
            self.config,
            self.splits,
            test,
            model=source,
            start="fine-tune" if self.pretrained else "scratch",
            stopped=stopped,
            wall_seconds=time.perf_counter() - self.started,
            device=describe_device(self.device, self.info, self.config.distributed),
            conversion=None if self.runtime is None else self.runtime.summary(),
            analyzed_plan=self.analyzed_plan,
            saved_model=saved,
            world_size=self.world_size,
            peak_memory_per_rank=peaks,
        )
        if whole.is_main:
            result.write(self.out)
        return result


def require_vocabulary_fits(model: nn.Module, splits: TokenSplits) -> None:
    """Every token id of the data is inside the model's vocabulary (else: one line naming the largest)."""
    vocab = model.get_input_embeddings().num_embeddings
    largest = max(int(getattr(splits, name).max()) for name in ("train", "valid", "test"))
    if largest >= vocab:
        raise BwskError(f"token id {largest} is outside the model's {vocab}-token vocabulary (a tokenizer for another model?)")
