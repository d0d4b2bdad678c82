"""bwsk-train: train a causal language model in one of four memory modes
(conventional, checkpoint, analyzed, reversible), with honest numbers.

Run it without arguments for a demo: a tiny model learns a text built into
bwsk, in seconds.

examples:
  # the demo (a tiny model, in seconds, in a temporary folder it names)
  bwsk-train
  # from scratch (a zoo name is a random init) on the offline WikiText-2 proxy
  bwsk-train pythia-70m --data wikitext-2 --split proxy \\
      --tokenizer gpt-neox-20b.json --mode reversible --out runs/rev
  # a text file split 90/5/5 by lines; 3 seeds (mean, spread: runs/a/seeds.json)
  bwsk-train pythia-410m --tiny --data notes.txt --split 90/5/5 \\
      --tokenizer tok.json --mode analyzed --seeds 3 --out runs/a
  # fine-tune a Hub model on a Hub dataset (online)
  bwsk-train EleutherAI/pythia-160m --data wikitext:wikitext-2-raw-v1 \\
      --tokenizer gpt-neox-20b.json --mode checkpoint --out runs/ft
  # train a finished run further (a reversible run: in --mode reversible only)
  bwsk-train runs/rev --data notes.txt --tokenizer tok.json \\
      --mode reversible --out runs/rev2
  # continue a killed or interrupted run
  bwsk-train --resume runs/rev
  # 8 GPUs with FSDP2 (--batch-size is per process), and its resume
  torchrun --nproc-per-node 8 --no-python bwsk-train pythia-410m \\
      --data wikitext-2 --split proxy --tokenizer gpt-neox-20b.json \\
      --mode reversible --distributed fsdp --out runs/fsdp
  torchrun --nproc-per-node 8 --no-python bwsk-train --resume runs/fsdp
  # the six-variant experiment (see bwsk-train experiment --help)
  bwsk-train experiment --model runs/base --data wikitext-2 --split proxy \\
      --seeds 3 --out results

MODEL: a zoo name (random init: trained from scratch), a Hugging Face folder or
Hub id (its weights: fine-tuned), or an earlier run's folder (its final weights;
its checkpoints/ folder: the latest checkpoint).
DATA: a folder of WikiText files (wiki.train.raw, ... or *.tokens), a text file
(split by lines with --split, default 90/5/5), or a Hugging Face dataset
name[:config] (needs `datasets` and the network). --split proxy: the offline
WikiText-2 proxy (train on valid.tokens, validate and test on the two halves of
test.tokens; the results say so).

Results in OUT: training_results.json (perplexity token-weighted over sliding
windows, the method stated), metrics.jsonl, the final model as a Hugging Face
folder (a reversible run's loads with AutoModelForCausalLM after
`bwsk.register()`), checkpoints/ (each checkpoint a loadable model folder).
Distributed (--distributed ddp|fsdp, under torchrun): every mode; --batch-size
is per process (global batch = batch size x processes); nccl on GPUs (one per
process, by local rank), gloo with --device cpu; rank 0 alone writes; --resume
under the same launcher, on as many processes.
Untrusted input: a MODEL folder's own Python code runs only with
--trust-remote-code, its pickled weights load only with --trust-pickle, and
--resume never takes either from the run folder (pass them again). Every error
is one line on stderr; nothing is created before every check has passed.
Exit codes: 0 done, 1 training diverged (NaN/inf: no results written), 2 bad
input, 3 internal error (a bug: the line names a log file with the traceback),
130 interrupted by Ctrl-C or 143 by SIGTERM (checkpoint saved; the message says
how to resume).
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from bwsk.cli.arguments import EXIT_USER_ERROR, ArgumentParser, positive_int
from bwsk.errors import BwskError, first_line, one_line
from bwsk.frontend import zoo
from bwsk.render.units import human_bytes
from bwsk.training.choices import KERNELS, MODES, PRECISIONS, STRATEGIES
from bwsk.training.trainer.config import MAX_SEED, TrainConfig
from bwsk.training.trainer.interrupt import signals_interrupt, stopped_by

if TYPE_CHECKING:  # the runtime (torch, transformers) is imported once a command line is parsed: --help stays fast
    from bwsk.training.experiments.runs import RunSpec
    from bwsk.training.trainer.run_folder import RunResult

EXIT_INTERNAL_ERROR = 3
TRUST_FLAGS = ("trust_remote_code", "trust_pickle")  # the only flags --resume takes: trust is never read from a run folder
EXPERIMENTS = ("finetune", "scratch")
DEMO_MODES = ("conventional", "reversible")
DEMO_LAYERS, DEMO_BATCH, DEMO_SEQ, DEMO_STEPS = 6, 16, 32, 20  # enough tokens per step that the activations set the peak
EXPERIMENT_HELP = """\
The grid of training variants: experiments (finetune, scratch) x modes x seeds;
every run is a bwsk-train run with the same settings.

examples:
  # a pretrained start, offline: train a base model first
  bwsk-train pythia-70m --data wikitext-2 --split proxy \\
      --tokenizer gpt-neox-20b.json --out runs/base
  # 2 experiments x 3 modes x 3 seeds
  bwsk-train experiment --model runs/base --data wikitext-2 --split proxy \\
      --seeds 3 --max-steps 200 --out results
  # from scratch only (a zoo name suffices), two modes
  bwsk-train experiment --model pythia-70m --tiny --experiments scratch \\
      --modes conventional,reversible --data notes.txt --tokenizer tok.json \\
      --out quick

finetune starts every run from MODEL's weights (a reversible run's: in the
reversible mode only); scratch draws MODEL's architecture at random from each
seed (one start per seed, shared by the modes).
Writes OUT/README.md (the model card: Hub metadata, tables with the noise
floor, the spread between seeds, beside every difference between modes; the
configuration; the perplexity method; plots), OUT/results.json, and one folder
per variant (finetune-conventional/, finetune-bwsk-reversible/, ...) with what
one uploads: the first seed's model, loadable with AutoModelForCausalLM (after
`bwsk.register()` for reversible ones), its tokenizer, training_results.json.
Every run's working folder (checkpoints, metrics) is OUT/runs/VARIANT/seed-S/.
Prints a line per finished run (and a bar over the runs on a terminal).
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.filterwarnings("ignore")
    atexit.register(_leave_process_group)  # at exit, not per call: a process group cannot be joined twice
    try:
        with signals_interrupt():  # SIGTERM as Ctrl-C: inside the loop a checkpoint first, elsewhere at once
            if not argv:
                return _demo(Console(stderr=False))
            if argv[0] == "experiment":
                return _experiment(argv[1:])
            return _train(argv)
    except BwskError as error:  # an interrupted run (128 + signal) and a diverged one (1) carry their own exit codes
        _report(error.render())
        return getattr(error, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        _report(stopped_by(signum))
        return 128 + signum
    except Exception as error:  # a bug in bwsk: one line, the traceback in a log file
        return _internal_error(error)


def _internal_error(error: Exception) -> int:
    """Report a bug in one line naming a log file that holds the traceback (printed too with BWSK_DEBUG=1)."""
    text = traceback.format_exc()
    if os.environ.get("BWSK_DEBUG"):
        sys.stderr.write(text)
    try:
        handle, log = tempfile.mkstemp(prefix="bwsk-train-error-", suffix=".log")
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        where = f"the traceback is in {log}"
    except OSError:
        where = "no log file could be written; set BWSK_DEBUG=1 for the traceback"
    _report(f"internal error: {one_line(first_line(error))} ({where}; please report it)")
    return EXIT_INTERNAL_ERROR


def _leave_process_group() -> None:
    distributed = sys.modules.get("bwsk.training.distributed")  # only a run that imported it can have joined a group
    if distributed is not None:
        distributed.shutdown_distributed()


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process outside any job (see `bwsk.training.distributed.is_main_process`)."""
    distributed = sys.modules.get("bwsk.training.distributed")
    return distributed.is_main_process() if distributed is not None else os.environ.get("RANK", "0") == "0"


def _report(message: str) -> None:
    """An error line on stderr, from rank 0 only when torchrun started several processes (each would print it)."""
    if is_main_process():
        print(f"bwsk-train: {message}", file=sys.stderr)


def _progress_line(line: str) -> None:
    """A line on stderr (above any progress bar) from rank 0: one finished run of an experiment."""
    if is_main_process():
        print(line, file=sys.stderr, flush=True)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The knobs of `TrainConfig`, each a flag with the config's default."""
    group = parser.add_argument_group("training (defaults: the earlier work's setup)")
    group.add_argument(
        "--seed",
        type=int,
        default=TrainConfig.seed,
        help=f"first seed, 0 to {MAX_SEED}: weights of a scratch model, data order, dropout (default %(default)s)",
    )
    group.add_argument("--seeds", type=positive_int, default=1, help="runs with seeds SEED, SEED+1, ... into OUT/seed-S (default 1)")
    group.add_argument("--epochs", type=positive_int, default=TrainConfig.epochs, help="passes over the train split (default %(default)s)")
    group.add_argument("--max-steps", type=positive_int, help="stop after this many optimizer steps (default: the epochs)")
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=TrainConfig.batch_size,
        help="sequences per step, per process when distributed (default %(default)s)",
    )
    group.add_argument("--seq-len", type=positive_int, help="tokens per sequence (default min(512, the model's positions))")
    group.add_argument("--lr", type=float, help="peak learning rate (default 5e-5 to fine-tune, 3e-4 from scratch)")
    group.add_argument(
        "--weight-decay", type=float, default=TrainConfig.weight_decay, help="AdamW weight decay on matrices (default %(default)s)"
    )
    group.add_argument("--adam-eps", type=float, default=TrainConfig.adam_eps, help="AdamW epsilon (default %(default)s)")
    group.add_argument("--warmup-steps", type=int, help="linear warmup steps before the cosine, 0 or more (default 5%% of the steps)")
    group.add_argument(
        "--min-lr-ratio", type=float, default=TrainConfig.min_lr_ratio, help="the cosine ends at lr x this, 0 to 1 (default %(default)s)"
    )
    group.add_argument(
        "--grad-clip", type=float, default=TrainConfig.grad_clip, help="gradient-norm clipping, 0 for none (default %(default)s)"
    )
    group.add_argument(
        "--precision", choices=list(PRECISIONS), default=TrainConfig.precision, help="autocast bf16, fp16 (CUDA, gradient scaler) or fp32"
    )
    group.add_argument(
        "--patience",
        type=positive_int,
        default=TrainConfig.patience,
        help="evaluations without a better validation loss before stopping (%(default)s)",
    )
    group.add_argument("--eval-every", type=positive_int, help="steps between validations (default: each epoch)")
    group.add_argument("--eval-window", type=positive_int, help="perplexity window in tokens (default: the sequence length)")
    group.add_argument("--eval-stride", type=positive_int, help="perplexity stride (default: half the window)")
    group.add_argument(
        "--eval-batch-size",
        type=positive_int,
        default=TrainConfig.eval_batch_size,
        help="windows per evaluation forward (default %(default)s)",
    )
    group.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=TrainConfig.checkpoint_every,
        help="steps between checkpoints (default %(default)s)",
    )
    group.add_argument(
        "--budget",
        default=TrainConfig.budget,
        help="analyzed mode: activation bytes to keep for backward, as bytes (6GiB, 512MiB) or a fraction of what "
        "conventional training keeps (above 0 to 1, default %(default)s); the rest is recomputed, cheapest per byte first",
    )
    group.add_argument(
        "--drift-every", type=positive_int, default=TrainConfig.drift_every, help="reversible mode: steps between rebuild-error probes"
    )
    group.add_argument(
        "--kernels",
        choices=KERNELS,
        default=TrainConfig.kernels,
        help="reversible mode: the seams' arithmetic. torch: eager PyTorch, each half runs its own norm; triton: bwsk's fused "
        "Triton kernels (the stream update and the LayerNorm/RMSNorm the next half starts with, in one pass; CUDA, or "
        "TRITON_INTERPRET=1 on the cpu, slowly); auto: triton on CUDA, torch elsewhere (default)",
    )
    group.add_argument("--device", default=TrainConfig.device, help="auto (CUDA when present), cpu, cuda or cuda:N")
    group.add_argument(
        "--optimizer-in-backward",
        action="store_true",
        default=TrainConfig.optimizer_in_backward,
        help="step each parameter inside the backward as soon as its gradient is final and free that gradient, so the "
        "gradients never all coexist (peak lower by up to their bytes, same weights as --grad-clip 0); needs --grad-clip 0, "
        "one process, bf16 or fp32",
    )


def add_reporting_arguments(parser: argparse.ArgumentParser) -> None:
    """How a run reports as it goes, besides its folder (not settings of the run: --resume takes them too)."""
    group = parser.add_argument_group("reporting")
    group.add_argument(
        "--log-format",
        choices=("text", "jsonl"),
        default="text",
        help="progress on stderr: text (a bar on a terminal, a line every 10 s elsewhere) or jsonl (the metrics records "
        "as JSON lines: every evaluation, a training step every 10 s)",
    )
    group.add_argument(
        "--tensorboard", metavar="DIR", help="also write the metrics as TensorBoard scalars into DIR (needs bwsk[tensorboard])"
    )


def reporting(args: argparse.Namespace) -> dict:
    """`progress` and `observer` for the runs of this command line (observers on rank 0 only)."""
    from bwsk.training.trainer.observers import JsonLinesLog, TensorBoardLog, observing

    if not is_main_process():
        return {"progress": False if args.log_format == "jsonl" else None, "observer": None}
    observers = [JsonLinesLog() if args.log_format == "jsonl" else None, TensorBoardLog(args.tensorboard) if args.tensorboard else None]
    return {"progress": False if args.log_format == "jsonl" else None, "observer": observing(observers)}


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inputs")
    group.add_argument("--data", metavar="DATA", help="WikiText folder, text file, or Hugging Face dataset name[:config]")
    group.add_argument("--split", metavar="RULE", help="text file: TRAIN/VALID/TEST percent of lines (90/5/5); folder: proxy")
    group.add_argument("--dataset-config", help="Hugging Face dataset configuration (e.g. wikitext-2-raw-v1)")
    group.add_argument("--tokenizer", metavar="T", help="tokenizer.json (default: the one in the MODEL folder)")
    group.add_argument("--tiny", action="store_true", help="zoo MODEL at tiny width (hidden 64, 4 heads)")
    group.add_argument("--layers", type=positive_int, help="zoo MODEL depth")
    group.add_argument(
        "--trust-remote-code", action="store_true", help="let a Hugging Face MODEL run its own Python code (never read from a run folder)"
    )
    group.add_argument(
        "--trust-pickle",
        action="store_true",
        help="let a Hugging Face MODEL's pickled weights load (unpickling runs code; never read from a run folder)",
    )
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
        kernels=args.kernels,
        device=args.device,
        distributed=getattr(args, "distributed", None),
        optimizer_in_backward=args.optimizer_in_backward,
    )


def spec_from(args: argparse.Namespace, model: str) -> RunSpec:
    from bwsk.training.experiments.runs import RunSpec

    if args.data is None:
        raise BwskError("--data is required (a WikiText folder, a text file or a dataset name)")
    return RunSpec(
        model, args.data, args.split, args.dataset_config, args.tokenizer, args.tiny, args.layers, args.trust_remote_code, args.trust_pickle
    )


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="bwsk-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = ", ".join(zoo.causal_lm_names())
    parser.add_argument("model", nargs="?", metavar="MODEL", help=f"zoo name ({models}), HF folder or Hub id, or a run's folder")
    parser.add_argument(
        "--mode", choices=MODES, default="conventional", help="how activations are kept for backward (default conventional)"
    )
    parser.add_argument("--out", metavar="DIR", help="the run folder (refused if it holds a run, unless --force)")
    parser.add_argument(
        "--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint (no other arguments but the --trust-* flags)"
    )
    parser.add_argument(
        "--distributed", choices=STRATEGIES, help="under torchrun: data-parallel with DDP or FSDP2 (gloo with --device cpu, else nccl)"
    )
    add_input_arguments(parser)
    add_training_arguments(parser)
    add_reporting_arguments(parser)
    return parser


def _train(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from bwsk.training.experiments.runs import resume_training, run_seeds, run_training

    console = Console(stderr=False)
    if args.resume is not None:
        defaults = vars(parser.parse_args([]))
        kept = ("resume", "log_format", "tensorboard", *TRUST_FLAGS)
        given = [name for name, value in vars(args).items() if name not in kept and value != defaults[name]]
        if given:
            flag = "MODEL" if given[0] == "model" else "--" + given[0].replace("_", "-")
            raise BwskError(
                f"--resume DIR takes the run's own settings from DIR/run.json; pass no {flag} (only --trust-*, --log-format, --tensorboard)"
            )
        trust = {name: getattr(args, name) for name in TRUST_FLAGS}
        result = resume_training(Path(args.resume), **trust, **reporting(args))
        _print_table(console, [result], Path(args.resume))
        return 0
    if args.model is None or args.out is None:
        raise BwskError("MODEL and --out DIR are required (or run bwsk-train without arguments for the demo; see --help)")
    spec, config, out = spec_from(args, args.model), config_from(args, args.mode), Path(args.out)
    if args.seeds == 1:
        result = run_training(spec, config, out, force=args.force, **reporting(args))
        _print_table(console, [result], out)
        return 0
    results, summary = run_seeds(spec, config, out, seeds=args.seeds, force=args.force, **reporting(args))
    _print_table(console, results, out)
    test = summary["test_perplexity"]
    if is_main_process():
        console.print(f"test perplexity over {test['n']} seeds: {test['mean']:.3f} +- {test['std']:.3f} (sample std)", highlight=False)
    return 0


def _experiment_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="bwsk-train experiment", description=EXPERIMENT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the pretrained start (folder or Hub id; offline: an earlier run's folder)")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="the experiment folder: README.md, results.json, one folder per variant, runs/"
    )
    parser.add_argument(
        "--modes", default="conventional,analyzed,reversible", help="comma-separated modes (default conventional,analyzed,reversible)"
    )
    parser.add_argument("--experiments", default="finetune,scratch", help="comma-separated: finetune, scratch (default both)")
    parser.add_argument(
        "--eval", choices=["lm-eval"], help="then evaluate every variant with lm-eval on the test split (needs: pip install 'bwsk[eval]')"
    )
    add_input_arguments(parser)
    add_training_arguments(parser)
    add_reporting_arguments(parser)
    return parser


def _experiment(argv: list[str]) -> int:
    args = _experiment_parser().parse_args(argv)
    modes, experiments = _choices(args.modes, MODES, "--modes"), _choices(args.experiments, EXPERIMENTS, "--experiments")
    try:
        from bwsk.training.experiments.grid import run_experiment
    except ImportError:
        raise BwskError("the experiment runner (bwsk.training.experiments.grid) is not part of this installation yet") from None
    if args.eval:
        from bwsk.training.experiments.lm_eval_task import evaluate_experiment, require_lm_eval

        require_lm_eval()
    out, spec, config = Path(args.out), spec_from(args, args.model), config_from(args, modes[0])
    summary = run_experiment(
        spec,
        config,
        out,
        modes=modes,
        experiments=experiments,
        seeds=args.seeds,
        force=args.force,
        report=_progress_line,
        **reporting(args),
    )
    if args.eval and is_main_process():
        evaluate_experiment(out, summary, spec, device=config.device)
    if is_main_process():
        print(f"the experiment is in {out}: README.md (the model card), results.json, one folder per variant; runs in {out / 'runs'}")
    return 0


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise BwskError(f"{flag}: {', '.join(unknown) or 'nothing'} is not among {', '.join(allowed)}")
    return chosen


def _demo(console: Console) -> int:
    from bwsk.training.experiments.demo_data import write_demo_inputs
    from bwsk.training.experiments.runs import RunSpec, run_training

    folder = Path(tempfile.mkdtemp(prefix="bwsk-train-demo-"))
    text, tokenizer = write_demo_inputs(folder)
    spec = RunSpec("pythia-70m", str(text), "90/5/5", tokenizer=str(tokenizer), tiny=True, layers=DEMO_LAYERS)
    console.print(
        f"bwsk-train demo: a tiny Pythia-70M ({DEMO_LAYERS} layers, hidden 64) learns {text.name} in modes "
        f"{' and '.join(DEMO_MODES)}, {DEMO_STEPS} steps of {DEMO_BATCH} x {DEMO_SEQ} tokens",
        highlight=False,
    )
    results = []
    for mode in DEMO_MODES:
        config = TrainConfig(
            mode=mode, max_steps=DEMO_STEPS, batch_size=DEMO_BATCH, seq_len=DEMO_SEQ, lr=2e-3, precision="fp32", device="cpu",
            eval_every=DEMO_STEPS // 2, patience=DEMO_STEPS,
        )  # fmt: skip
        results.append(run_training(spec, config, folder / mode))
    _print_table(console, results, folder)
    conventional, reversible = results[0].peak_memory_bytes, results[-1].peak_memory_bytes
    if conventional and reversible:
        console.print(
            f"Why the peaks differ ({reversible / conventional:.0%}): at {DEMO_BATCH} x {DEMO_SEQ} tokens the activations of "
            "the layer stack outweigh the weights, gradients and AdamW state, and reversible training keeps one pair of "
            "streams for the whole stack instead of every layer's activations (with few tokens per step the optimizer "
            "step sets the peak and the modes peak alike).",
            highlight=False,
        )
    console.print("Next: bwsk-train --help (your own model and data; --mode checkpoint|analyzed; --seeds 3)", highlight=False)
    return 0


def _print_table(console: Console, results: list[RunResult], out: Path) -> None:
    """The runs as a table that fits 80 columns, then how they stopped, the perplexity method, the data, the memory source."""
    if not is_main_process():
        return
    table = Table(title=f"bwsk-train results ({out})", box=None, pad_edge=False)
    for column in ("mode", "seed", "steps", "train\nloss", "valid\nppl", "test\nppl", "peak\nmemory", "tok/s", "wall"):
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for r in results:
        memory = "-" if r.peak_memory_bytes is None else human_bytes(r.peak_memory_bytes)
        table.add_row(
            r.mode, str(r.seed), str(r.steps), f"{r.final_train_loss:.3f}", f"{r.valid_perplexity:.2f}",
            f"{r.test_perplexity:.2f}", memory, f"{r.tokens_per_s:,.0f}", f"{r.wall_seconds:.1f} s",
        )  # fmt: skip
    console.print(table)
    if not results:
        return
    reasons = {r.stopped for r in results}
    stopped = reasons.pop() if len(reasons) == 1 else "; ".join(f"{r.mode} seed {r.seed}: {r.stopped}" for r in results)
    console.print(f"stopped: {stopped}", highlight=False)
    console.print(f"perplexity: {results[0].perplexity_method}", highlight=False)
    console.print(f"data: {results[0].data}", highlight=False)
    console.print(f"peak memory: {results[0].peak_memory_source}", highlight=False)
    for kernels, fused in dict.fromkeys((r.conversion["kernels"], r.conversion["fused_norms"]) for r in results if r.conversion):
        console.print(f"seams of the reversible mode: {kernels} ({fused} norms computed by the seams)", highlight=False)


if __name__ == "__main__":
    sys.exit(main())
