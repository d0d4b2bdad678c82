"""`bwsk-train`: train a causal language model in one of four memory modes, with honest numbers.

Without arguments: a demo that trains a tiny model on a text built into bwsk, in seconds.

examples:
  bwsk-train                                               # the demo (writes to a temporary folder)
  bwsk-train pythia-70m --data ../shared/data/wikitext-2 --split proxy \\
      --tokenizer ../shared/data/tokenizer/gpt-neox-20b.json --mode reversible --out runs/rev
  bwsk-train pythia-410m --tiny --data notes.txt --split 90/5/5 --tokenizer tok.json --mode analyzed --out runs/a --seeds 3
  bwsk-train EleutherAI/pythia-160m --data wikitext:wikitext-2-raw-v1 --mode checkpoint --out runs/ft   # fine-tune (online)
  bwsk-train runs/rev --data notes.txt --mode conventional --out runs/rev2      # start from an earlier run's weights
  bwsk-train --resume runs/rev                                                  # continue a killed or interrupted run
  torchrun --nproc-per-node 8 $(which bwsk-train) pythia-410m --data D --split proxy --tokenizer T \
      --mode reversible --distributed fsdp --out runs/fsdp                       # 8 GPUs (batch: per process)
  bwsk-train experiment --model runs/base --data D --split proxy --out results  # the six-variant experiment

MODEL: a zoo name (random init: trained from scratch), a Hugging Face folder or Hub id (its weights:
fine-tuned), or an earlier run's folder. DATA: a folder of WikiText files (wiki.train.raw, ... or
*.tokens), a text file (split by lines with --split, default 90/5/5), or a Hugging Face dataset
name[:config] (needs `datasets` and the network). --split proxy: the offline WikiText-2 proxy
(train on valid.tokens, validate and test on the two halves of test.tokens; results say so).

Results: OUT/training_results.json (perplexity: token-weighted, sliding windows, method stated),
OUT/metrics.jsonl, the final model as a Hugging Face folder in OUT, checkpoints in OUT/checkpoints.
Distributed (--distributed ddp|fsdp, under torchrun or python -m torch.distributed.run): every mode;
--batch-size is per process (global batch = batch size x processes); nccl on GPUs (one per process, by
local rank), gloo with --device cpu; rank 0 alone writes; --resume on the same number of processes.
Exit codes: 0 done, 1 training diverged (NaN/inf: no results written), 2 bad input, 130 interrupted
(checkpoint saved; --resume continues).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import tempfile
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bwsk.cli.arguments import EXIT_USER_ERROR, ArgumentParser, positive_int
from bwsk.errors import BwskError
from bwsk.frontend import zoo
from bwsk.training.config import PRECISIONS, TrainConfig
from bwsk.training.distributed import STRATEGIES, is_main_process, shutdown_distributed
from bwsk.training.modes import MODES
from bwsk.training.results import RunResult
from bwsk.training.runs import RunSpec, resume_training, run_seeds, run_training
from bwsk.training.trainer import TrainingDiverged, TrainingInterrupted

EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130
EXPERIMENTS = ("finetune", "scratch")
DEMO_MODES = ("conventional", "reversible")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.filterwarnings("ignore")
    atexit.register(shutdown_distributed)  # at exit, not per call: a process group cannot be joined twice
    try:
        if not argv:
            return _demo(Console(stderr=False))
        if argv[0] == "experiment":
            return _experiment(argv[1:])
        return _train(argv)
    except TrainingInterrupted as error:
        _report(error.render())
        return EXIT_INTERRUPTED
    except TrainingDiverged as error:
        _report(error.render())
        return EXIT_DIVERGED
    except BwskError as error:
        _report(error.render())
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _report("interrupted")
        return EXIT_INTERRUPTED


def _report(message: str) -> None:
    """An error line on stderr, from rank 0 only when torchrun started several processes (each would print it)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"bwsk-train: {message}", file=sys.stderr)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The knobs of `TrainConfig`, each a flag with the config's default."""
    group = parser.add_argument_group("training (defaults: the earlier work's setup)")
    group.add_argument("--seed", type=int, default=0, help="first seed: weights of a scratch model, data order, dropout (default 0)")
    group.add_argument("--seeds", type=positive_int, default=1, help="runs with seeds SEED, SEED+1, ... into OUT/seed-S (default 1)")
    group.add_argument("--epochs", type=positive_int, default=10, help="passes over the train split (default 10)")
    group.add_argument("--max-steps", type=positive_int, help="stop after this many optimizer steps (default: the epochs)")
    group.add_argument("--batch-size", type=positive_int, default=2, help="sequences per step, per process when distributed (default 2)")
    group.add_argument("--seq-len", type=positive_int, help="tokens per sequence (default min(512, the model's positions))")
    group.add_argument("--lr", type=float, help="peak learning rate (default 5e-5 to fine-tune, 3e-4 from scratch)")
    group.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay on matrices (default 0.01)")
    group.add_argument("--adam-eps", type=float, default=1e-8, help="AdamW epsilon (default 1e-8)")
    group.add_argument("--warmup-steps", type=int, help="linear warmup steps before the cosine (default 5%% of the steps)")
    group.add_argument("--min-lr-ratio", type=float, default=0.0, help="the cosine ends at lr x this (default 0)")
    group.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clipping, 0 for none (default 1.0)")
    group.add_argument("--precision", choices=list(PRECISIONS), default="bf16", help="autocast bf16, fp16 (CUDA, gradient scaler) or fp32")
    group.add_argument("--patience", type=positive_int, default=3, help="evaluations without a better validation loss before stopping (3)")
    group.add_argument("--eval-every", type=positive_int, help="steps between validations (default: each epoch)")
    group.add_argument("--eval-window", type=positive_int, help="perplexity window in tokens (default: the sequence length)")
    group.add_argument("--eval-stride", type=positive_int, help="perplexity stride (default: half the window)")
    group.add_argument("--eval-batch-size", type=positive_int, default=8, help="windows per evaluation forward (default 8)")
    group.add_argument("--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints (default 500)")
    group.add_argument("--budget", type=float, default=TrainConfig.budget, help="analyzed mode: share of recomputable bytes kept")
    group.add_argument("--drift-every", type=positive_int, default=100, help="reversible mode: steps between rebuild-error probes")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inputs")
    group.add_argument("--data", metavar="DATA", help="WikiText folder, text file, or Hugging Face dataset name[:config]")
    group.add_argument("--split", metavar="RULE", help="text file: TRAIN/VALID/TEST percent of lines (90/5/5); folder: proxy")
    group.add_argument("--dataset-config", help="Hugging Face dataset configuration (e.g. wikitext-2-raw-v1)")
    group.add_argument("--tokenizer", metavar="T", help="tokenizer.json (default: the one in the MODEL folder)")
    group.add_argument("--tiny", action="store_true", help="zoo MODEL at tiny width (hidden 64, 4 heads)")
    group.add_argument("--layers", type=positive_int, help="zoo MODEL depth")
    group.add_argument("--trust-remote-code", action="store_true", help="let a Hugging Face MODEL run its own Python code")
    group.add_argument("--force", action="store_true", help="replace the run files already in OUT")


def config_from(args: argparse.Namespace, mode: str) -> TrainConfig:
    """The `TrainConfig` the parsed flags describe (mode given separately: the experiment sets it per variant)."""
    return TrainConfig(
        mode=mode,
        seed=args.seed,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        weight_decay=args.weight_decay,
        adam_eps=args.adam_eps,
        warmup_steps=args.warmup_steps,
        min_lr_ratio=args.min_lr_ratio,
        grad_clip=args.grad_clip,
        precision=args.precision,
        patience=args.patience,
        eval_every=args.eval_every,
        eval_window=args.eval_window,
        eval_stride=args.eval_stride,
        eval_batch_size=args.eval_batch_size,
        checkpoint_every=args.checkpoint_every,
        budget=args.budget,
        drift_every=args.drift_every,
        device=args.device,
        distributed=getattr(args, "distributed", None),
    )


def spec_from(args: argparse.Namespace, model: str) -> RunSpec:
    if args.data is None:
        raise BwskError("--data is required (a WikiText folder, a text file or a dataset name)")
    return RunSpec(model, args.data, args.split, args.dataset_config, args.tokenizer, args.tiny, args.layers, args.trust_remote_code)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="bwsk-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", metavar="MODEL", help=f"zoo name ({', '.join(zoo.names())}), HF folder or Hub id, run folder")
    parser.add_argument(
        "--mode", choices=MODES, default="conventional", help="how activations are kept for backward (default conventional)"
    )
    parser.add_argument("--out", metavar="DIR", help="the run folder (refused if it holds a run, unless --force)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint (no other arguments)")
    parser.add_argument(
        "--distributed", choices=STRATEGIES, help="under torchrun: data-parallel with DDP or FSDP2 (gloo with --device cpu, else nccl)"
    )
    add_input_arguments(parser)
    add_training_arguments(parser)
    return parser


def _train(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=False)
    if args.resume is not None:
        if args.model is not None or args.out is not None or args.data is not None or args.distributed is not None:
            raise BwskError("--resume DIR takes the run's own settings from DIR/run.json; pass no MODEL, --out, --data or --distributed")
        result = resume_training(Path(args.resume))
        _print_table(console, [result], Path(args.resume))
        return 0
    if args.model is None or args.out is None:
        raise BwskError("MODEL and --out DIR are required (or run bwsk-train without arguments for the demo; see --help)")
    spec, config, out = spec_from(args, args.model), config_from(args, args.mode), Path(args.out)
    if args.seeds == 1:
        result = run_training(spec, config, out, force=args.force)
        _print_table(console, [result], out)
        return 0
    results, summary = run_seeds(spec, config, out, seeds=args.seeds, force=args.force)
    _print_table(console, results, out)
    test = summary["test_perplexity"]
    if is_main_process():
        console.print(f"test perplexity over {test['n']} seeds: {test['mean']:.3f} +- {test['std']:.3f} (sample std)", highlight=False)
    return 0


def _experiment(argv: list[str]) -> int:
    parser = ArgumentParser(prog="bwsk-train experiment", description="The grid of training variants: experiments x modes x seeds.")
    parser.add_argument("--model", required=True, help="the pretrained start (folder or Hub id; offline: an earlier run's folder)")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="the experiment folder: results.json, README.md, one folder per variant"
    )
    parser.add_argument(
        "--modes", default="conventional,analyzed,reversible", help="comma-separated modes (default conventional,analyzed,reversible)"
    )
    parser.add_argument("--experiments", default="finetune,scratch", help="comma-separated: finetune, scratch (default both)")
    add_input_arguments(parser)
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    modes, experiments = _choices(args.modes, MODES, "--modes"), _choices(args.experiments, EXPERIMENTS, "--experiments")
    try:
        from bwsk.training.experiment import run_experiment
    except ImportError:
        raise BwskError("the experiment runner (bwsk.training.experiment) is not part of this installation yet") from None
    run_experiment(
        spec_from(args, args.model), config_from(args, modes[0]), Path(args.out),
        modes=modes, experiments=experiments, seeds=args.seeds, force=args.force,
    )  # fmt: skip
    return 0


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise BwskError(f"{flag}: {', '.join(unknown) or 'nothing'} is not among {', '.join(allowed)}")
    return chosen


def _demo(console: Console) -> int:
    from bwsk.training.demo import write_demo_inputs

    folder = Path(tempfile.mkdtemp(prefix="bwsk-train-demo-"))
    text, tokenizer = write_demo_inputs(folder)
    spec = RunSpec("pythia-70m", str(text), "90/5/5", tokenizer=str(tokenizer), tiny=True, layers=2)
    console.print(f"bwsk-train demo: tiny Pythia-70M (2 layers, hidden 64) on {text.name}, {', '.join(DEMO_MODES)} modes", highlight=False)
    results = []
    for mode in DEMO_MODES:
        config = TrainConfig(mode=mode, epochs=30, batch_size=4, seq_len=32, lr=2e-3, precision="fp32", device="cpu", patience=3)
        results.append(run_training(spec, config, folder / mode))
    _print_table(console, results, folder)
    console.print("Next: bwsk-train --help (your own model and data; --mode checkpoint|analyzed; --seeds 3)", highlight=False)
    return 0


def _print_table(console: Console, results: list[RunResult], out: Path) -> None:
    if not is_main_process():
        return
    table = Table(title=f"bwsk-train results ({out})")
    for column in ("mode", "seed", "steps", "stopped", "train loss", "valid ppl", "test ppl", "peak memory", "tokens/s", "wall"):
        table.add_column(column, justify="left" if column in ("mode", "stopped") else "right")
    for r in results:
        memory = "-" if r.peak_memory_bytes is None else f"{r.peak_memory_bytes / 2**20:,.1f} MiB"
        table.add_row(
            r.mode, str(r.seed), str(r.steps), r.stopped, f"{r.final_train_loss:.3f}", f"{r.valid_perplexity:.2f}",
            f"{r.test_perplexity:.2f}", memory, f"{r.tokens_per_s:,.0f}", f"{r.wall_seconds:.1f} s",
        )  # fmt: skip
    console.print(table)
    if results:
        console.print(f"perplexity: {results[0].perplexity_method}", highlight=False)
        console.print(f"data: {results[0].data}", highlight=False)
        console.print(f"peak memory: {results[0].peak_memory_source}", highlight=False)


if __name__ == "__main__":
    sys.exit(main())
