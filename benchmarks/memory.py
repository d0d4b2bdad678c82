"""Measure one real training step in each training mode: peak memory, activation bytes, prediction, time, gradients.

    python benchmarks/memory.py --mode reversible                       # embedded tiny Pythia, conventional beside it
    python benchmarks/memory.py --mode all --sweep layers=6,12,24       # activation memory against depth
    python benchmarks/memory.py --mode all --sweep tokens=64,128,256 --json out.json --plot out.png
    python benchmarks/memory.py --model pythia-160m --layers 4 --seq 64 --mode all
    python benchmarks/memory.py --model pythia-410m --device cuda --dtype bf16 --mode reversible --kernels torch,triton
    python benchmarks/memory.py --model pythia-70m:tiny --model pythia-70m --sweep layers=2,4,8 --sweep tokens=64,128 \
        --plot docs/memory.png --doc docs/memory.md      # several models and sweeps in one report
    python benchmarks/memory.py --drift --model pythia-70m --model pythia-410m --sweep layers=24,32,48 --dtype bf16,fp32 \
        --plot docs/memory-drift.png --doc docs/memory.md --force    # depth: gradient error, drift per block, its cost
    python benchmarks/memory.py --fake --model pythia-410m --model llama-3-8b --batch 1 --seq 4096 --dtype bf16
    python benchmarks/memory.py --fake --fit 24GiB,48GiB,80GiB --model pythia-410m --dtype bf16 \
        --json fit.json --plot docs/memory-fit.png --doc docs/memory.md --force    # what fits each budget
    python benchmarks/memory.py --fake --frontier 0.2,0.5,0.8 --model pythia-410m --batch 1 --seq 4096 --dtype bf16 \
        --plot docs/memory-frontier.png --doc docs/memory.md --force   # analyzed against torch's SAC ILP (needs pulp)

Each run applies every mode to its own copy of the same model (same weights) and
measures one step (forward, next-token loss, backward, AdamW step) with
MemTracker on the CPU or the CUDA allocator on a GPU. Conventional is always
measured: step times are ratios to it, gradients are compared with ordinary
autograd on the same function. --kernels measures the reversible mode once per
seam arithmetic, side by side. --drift measures the reversible stack at depth instead
(`bwsk.training.experiments.depth_drift`): gradient error against plain autograd, rebuild error
per block, the stack's activation bytes and what drift control costs, with fp32 streams
and with the defaults, at random init and after --train-steps steps; with --doc it
writes its own section of the document and keeps the rest (a modes report keeps an
existing depth section too). Outputs are never overwritten without --force.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from rich.console import Console
from rich.progress import Progress

from bwsk.atomic import write_atomic
from bwsk.cli.arguments import ArgumentParser
from bwsk.errors import BwskError
from bwsk.frontend import zoo
from bwsk.render.figures import new_figure, png_bytes
from bwsk.render.markdown import replace_heading_section
from bwsk.render.step_table import step_table
from bwsk.render.units import MIB
from bwsk.training.choices import KERNELS, parse_budget
from bwsk.training.experiments import depth_report
from bwsk.training.experiments.memory_fit import VARIANTS
from bwsk.training.modes import DEFAULT_BUDGET, MODES
from bwsk.training.modes.compare import DTYPES, Record, compare_modes, variants

DEFAULT_MODEL = "pythia-70m"
TITLE = "# Training memory per mode, measured"
SWEEPS = ("layers", "tokens")
VARIANT_FLAGS = {"full": "full loss", "chunked": "chunked loss", "chunked-oib": "chunked + opt. in backward"}
CPU_TIME_LAYERS, CPU_TIME_SEQ = 2, 512


def parse_sweep(text: str) -> tuple[str, list[int]]:
    """`layers=6,12,24` or `tokens=256,512` -> (axis, values)."""
    axis, _, values = text.partition("=")
    if axis not in SWEEPS or not values:
        raise argparse.ArgumentTypeError(f"expected layers=N,N,... or tokens=N,N,... (got {text!r})")
    try:
        numbers = [int(v) for v in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: values must be whole numbers") from None
    if any(n < 1 for n in numbers):
        raise argparse.ArgumentTypeError(f"{text!r}: values must be at least 1")
    return axis, numbers


def parse_dtypes(text: str) -> list[str]:
    """`bf16` or `bf16,fp32` -> ["bf16", "fp32"] (each one of `DTYPES`)."""
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    if not chosen or any(item not in DTYPES for item in chosen):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {', '.join(DTYPES)}")
    return list(dict.fromkeys(chosen))


def parse_budgets(text: str) -> list[int]:
    """`24GiB,48GiB` -> their sizes in bytes (each a size with a binary unit: `bwsk.training.choices.parse_budget`), ascending."""
    sizes = []
    for item in (item.strip() for item in text.split(",")):
        try:
            size = parse_budget(item, "--fit") if any(c.isalpha() for c in item) else None
        except BwskError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if not isinstance(size, int):
            raise argparse.ArgumentTypeError(f"{item!r}: expected sizes like 24GiB,48GiB (units B, KiB, MiB, GiB, TiB)")
        sizes.append(size)
    return sorted(set(sizes))


def parse_fractions(text: str) -> list[float]:
    """`0.2,0.5,0.8` -> those fractions of conventional activation memory, ascending (each in (0, 1])."""
    try:
        found = sorted({float(item) for item in text.split(",") if item.strip()})
    except ValueError:
        found = []
    if not found or not all(0 < f <= 1 for f in found):
        raise argparse.ArgumentTypeError(f"{text!r}: expected fractions of conventional activation memory in (0, 1], like 0.2,0.5,0.8")
    return found


def analyzed_budget(text: str):
    """--budget: bytes with a unit or a fraction of conventional activation memory (`parse_budget`)."""
    try:
        return parse_budget(text, "--budget")
    except BwskError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_modes(text: str) -> list[str]:
    """`reversible` or `checkpoint,reversible` or `all` -> the modes in `MODES` order."""
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    if chosen == ["all"]:
        return list(MODES)
    if not chosen or any(item not in MODES for item in chosen):
        raise argparse.ArgumentTypeError(f"{text!r}: expected all or a comma-separated list of {', '.join(MODES)}")
    return [mode for mode in MODES if mode in chosen]


def parse_variants(text: str) -> list[str]:
    """`full,chunked-oib` -> the `VARIANTS` names they stand for, in `VARIANTS` order."""
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    if not chosen or any(item not in VARIANT_FLAGS for item in chosen):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {', '.join(VARIANT_FLAGS)}")
    return [name for flag, name in VARIANT_FLAGS.items() if flag in chosen]


def parse_kernels(text: str) -> list[str]:
    """`torch,triton` -> ["torch", "triton"] (each one of `KERNELS`)."""
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in KERNELS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {', '.join(KERNELS)}")
    return chosen


def parser() -> argparse.ArgumentParser:
    cli = ArgumentParser(
        prog="benchmarks/memory.py",
        description=__doc__.split("\n\n")[2],
        epilog="examples:\n" + "\n".join(line.strip() for line in __doc__.split("\n\n")[1].splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument(
        "--model",
        action="append",
        help=f"zoo name ({', '.join(zoo.names())}), NAME:tiny for its tiny width, or a Hugging Face model directory; "
        f"repeatable (default: {DEFAULT_MODEL}:tiny)",
    )
    cli.add_argument("--tiny", action="store_true", help="tiny width (hidden 64, vocab 256) for every zoo model")
    cli.add_argument("--layers", type=int, help="number of blocks (default: the model's own)")
    cli.add_argument("--batch", type=int, default=2, help="sequences per step (default 2)")
    cli.add_argument("--seq", type=int, default=64, help="tokens per sequence (default 64)")
    cli.add_argument(
        "--dtype",
        type=parse_dtypes,
        default=["fp32"],
        help="fp32, or bf16 autocast (predictions are for fp32); with --drift a comma-separated list (bf16,fp32)",
    )
    cli.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    cli.add_argument(
        "--mode",
        type=parse_modes,
        default=list(MODES),
        help=f"training modes to measure beside conventional, comma-separated: {', '.join(MODES)} or all (default all)",
    )
    cli.add_argument(
        "--budget",
        type=analyzed_budget,
        default=DEFAULT_BUDGET,
        help="analyzed mode: the activation bytes it may keep, as bytes (6GiB, 512MiB) or a fraction of conventional "
        f"activation memory (default {DEFAULT_BUDGET})",
    )
    cli.add_argument(
        "--kernels",
        type=parse_kernels,
        default=["auto"],
        help="reversible mode's seams, comma-separated, one record each: torch (eager), triton (bwsk's fused Triton seam "
        "kernels; CUDA, or TRITON_INTERPRET=1 on the cpu), auto (triton on CUDA, torch elsewhere; default)",
    )
    cli.add_argument(
        "--sweep",
        type=parse_sweep,
        action="append",
        help="layers=N,N,... (depth) or tokens=N,N,... (tokens per step at --batch); repeatable",
    )
    cli.add_argument("--repeats", type=int, default=3, help="timed steps per mode, interleaved (default 3)")
    cli.add_argument(
        "--drift",
        action="store_true",
        help="measure the reversible stack at depth instead of the modes: gradient error, drift per block, memory and cost",
    )
    cli.add_argument("--train-steps", type=int, default=100, help="with --drift: training steps before the second measurement (0: none)")
    cli.add_argument(
        "--fake",
        action="store_true",
        help="full-size models without weights: one step per mode under FakeTensorMode with MemTracker (exact bytes per "
        f"category at the peak, FLOPs); --model takes zoo names and {', '.join(FAKE_SHAPES)}",
    )
    cli.add_argument(
        "--variants",
        type=parse_variants,
        default=list(VARIANTS),
        help="with --fake: the steps measured per mode, comma-separated: full (the loss from the full logits), chunked "
        "(the LM head's loss a chunk of tokens at a time, the trainer's default), chunked-oib (chunked, and AdamW "
        "stepped inside the backward) (default all three)",
    )
    cli.add_argument(
        "--positions",
        type=int,
        help="with --fake: extend the model's positions to N (rotary positions: no byte depends on the limit) so "
        "sequences past the model's own limit are measured; with --fit the longest sequence searched "
        "(default: the model's own limit)",
    )
    cli.add_argument(
        "--cpu-time",
        action="store_true",
        help=f"with --fake: also time real fp32 steps of the first --model on this cpu at {CPU_TIME_LAYERS} blocks x "
        f"{CPU_TIME_SEQ} tokens (noisy ratios beside the counted FLOPs)",
    )
    cli.add_argument(
        "--fit",
        type=parse_budgets,
        metavar="24GiB,48GiB,...",
        help="with --fake: per model, mode and variant (full loss; chunked loss; chunked loss + optimizer in backward) the "
        "longest sequence at batch 1 and the largest batch at seq 2048 whose measured step peak fits each budget",
    )
    cli.add_argument(
        "--frontier",
        type=parse_fractions,
        metavar="0.2,0.5,...",
        help="activation bytes (measured) against recompute FLOPs (counted) of the analyzed plan and torch's SAC ILP at "
        "these budgets (fractions of conventional activation memory), beside checkpoint, reversible and conventional; "
        "with --fake the full-size models, else real steps at --layers and --seq; needs pulp (pip install 'bwsk[sac]')",
    )
    cli.add_argument("--json", metavar="OUT", help="write the records as a JSON list")
    cli.add_argument("--plot", metavar="OUT.png", help="plot activation bytes per mode against the swept axis")
    cli.add_argument("--doc", metavar="OUT.md", help="write a markdown report (tables, the plot, the command)")
    cli.add_argument("--force", action="store_true", help="replace existing output files")
    return cli


def build_model(args: argparse.Namespace, spec: str, layers: int | None) -> tuple[torch.nn.Module, str]:
    """The model `spec` (zoo name, NAME:tiny, or a Hugging Face directory) at `layers` blocks, and its label."""
    if os.path.isdir(spec):
        import transformers

        overrides = {"num_hidden_layers": layers} if layers is not None else {}
        model = transformers.AutoModelForCausalLM.from_pretrained(spec, attn_implementation="eager", **overrides)
        return model.to(args.device), os.path.basename(os.path.normpath(spec))
    name, _, suffix = spec.partition(":")
    if suffix not in ("", "tiny"):
        raise BwskError(f"--model {spec}: expected a zoo name, NAME:tiny or a model directory")
    tiny = args.tiny or suffix == "tiny"
    model = zoo.build(name, tiny=tiny, layers=layers, device=args.device)
    return model, f"{name}{' (tiny)' if tiny else ''}"


def runs(args: argparse.Namespace) -> list[tuple[str, int | None, int]]:
    """(swept axis, layers, seq) per run; the axis is "layers" for a single run."""
    if not args.sweep:
        return [("layers", args.layers, args.seq)]
    planned = []
    for axis, values in args.sweep:
        if axis == "layers":
            planned += [("layers", n, args.seq) for n in values]
        else:
            planned += [("tokens", args.layers, max(n // args.batch, 2)) for n in values]
    return planned


def plot(groups: dict[tuple[str, str], list[Record]], path: str, force: bool) -> None:
    """One row per (model, swept axis): activation bytes and peak bytes per mode against the axis."""
    figure, panels = new_figure(len(groups), 2, (11, 3.6 * len(groups)))
    for row, ((model, axis), records) in zip(panels, groups.items()):
        for label in dict.fromkeys(r.label for r in records):
            chosen = sorted((r for r in records if r.label == label), key=lambda r: getattr(r, axis))
            xs = [getattr(r, axis) for r in chosen]
            row[0].plot(xs, [r.activation_bytes / MIB for r in chosen], marker="o", label=label)
            row[1].plot(xs, [r.peak_bytes / MIB for r in chosen], marker="o", label=label)
        for panel, title in zip(row, ("activation bytes after forward", "peak of the training step")):
            panel.set_xlabel("blocks" if axis == "layers" else "tokens per step")
            panel.set_ylabel("MiB")
            panel.set_title(f"{model}: {title}")
            panel.grid(alpha=0.3)
            panel.ticklabel_format(axis="y", useOffset=False)
            panel.legend()
    write_atomic(path, png_bytes(figure), force=force)


MODES_HEADING = "## Real steps at reduced size: against depth and tokens"


def markdown(groups: dict[tuple[str, str], list[Record]], command: str, plot_path: str | None, doc_path: str) -> str:
    """The modes report's section: the command, a table per (model, swept axis), the plot (linked relative to the doc)."""
    first = next(iter(groups.values()))[0]
    lines = [
        MODES_HEADING,
        "",
        f"Written by `{command}`.",
        "",
        f"Device: {first.device}; memory counted by {first.peak_source}. "
        "Activations: bytes the forward's autograd graph keeps for backward; predicted: the analysis's figure for the "
        "same mode (fp32). Time: ratio to conventional timed in the same run. Max grad diff: against ordinary autograd "
        "on the same function (for reversible, the converted model with torch seams run with `plain_autograd`); "
        "reversible rows name their seams: torch (eager) or triton (bwsk's fused seam kernels).",
        "",
        "Reading it: activation bytes grow with blocks and tokens in conventional and analyzed training, with one stored "
        "input per block under checkpointing, and stay flat in depth under reversible training (two float64 streams and the "
        "side inputs). The peak of a step adds parameters, gradients and AdamW state (16 bytes per parameter), which at "
        "full width and these short sequences is most of it: the optimizer step, not the activations, sets the peak "
        "there, so every mode peaks alike. Step times on a shared CPU are noisy; GPU figures need a GPU.",
    ]
    for (model, axis), records in groups.items():
        lines += ["", f"### {model}: against {'depth' if axis == 'layers' else 'tokens'}", ""]
        lines += table_lines(records)
    if plot_path:
        lines += ["", f"![activation and peak memory per mode]({os.path.relpath(plot_path, os.path.dirname(os.path.abspath(doc_path)))})"]
    return "\n".join(lines) + "\n"


def table_lines(records: list[Record]) -> list[str]:
    lines = [
        "| blocks | batch x seq | mode | peak MiB | activations MiB | predicted MiB | pred/meas | time x conv | max grad diff |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        predicted = r.predicted_activation_bytes
        ratio = "n/a" if predicted is None or not r.activation_bytes else f"{predicted / r.activation_bytes:.3f}"
        lines.append(
            f"| {r.layers} | {r.batch} x {r.seq} | {r.label} | {r.peak_bytes / MIB:.2f} | {r.activation_bytes / MIB:.3f} | "
            f"{'n/a' if predicted is None else f'{predicted / MIB:.3f}'} | {ratio} | "
            f"{r.step_time_ratio:.2f} | {r.max_grad_difference:.1e} |"
        )
    return lines


@contextlib.contextmanager
def progress_lines(console: Console) -> Iterator[Callable[[str], None]]:
    """Progress of a long measurement, reported per step: one live line on a terminal; elsewhere (a log, CI) a line
    per step with the seconds since the start."""
    start = time.perf_counter()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("measuring", total=None)

        def report(message: str) -> None:
            if console.is_terminal:
                progress.update(task, description=message)
            else:
                console.print(f"[{time.perf_counter() - start:.0f} s] {message}", markup=False, highlight=False)

        yield report


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=True)
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    command = threads + "python benchmarks/memory.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        for path in (args.json, args.plot, args.doc):
            if path and os.path.lexists(path) and not args.force:
                raise BwskError(f"{path}: already exists (pass --force to replace it)")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise BwskError("--device cuda: no CUDA device is available here")
        if args.batch < 1 or args.seq < 2 or (args.layers is not None and args.layers < 1):
            raise BwskError("--batch and --layers must be at least 1, --seq at least 2")
        if args.fit and not args.fake:
            raise BwskError("--fit measures fake steps: add --fake")
        if args.frontier and args.fit:
            raise BwskError("--frontier and --fit are separate measurements: pass one")
        if args.frontier:
            measure_frontier(args, console, command)
        elif args.fake and args.fit:
            measure_fit(args, console, command)
        elif args.fake:
            measure_fake(args, console, command)
        elif args.drift:
            measure_drift(args, console, command)
        else:
            if len(args.dtype) > 1:
                raise BwskError(f"--dtype {','.join(args.dtype)}: several precisions are measured with --drift only")
            measure_modes(args, console, command)
    except BwskError as error:
        console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)  # one line, at any width
        return 2
    return 0


def measure_modes(args: argparse.Namespace, console: Console, command: str) -> None:
    """Every mode beside conventional, per model and run: the table, and the outputs asked for."""
    modes = args.mode
    variants(modes, args.kernels, torch.device(args.device))  # the kernels can run here: refused before any model is built
    groups: dict[tuple[str, str], list[Record]] = {}
    planned = [(spec, axis, layers, seq) for spec in args.model or [f"{DEFAULT_MODEL}:tiny"] for axis, layers, seq in runs(args)]
    with progress_lines(console) as report:
        for index, (spec, axis, layers, seq) in enumerate(planned):
            model, label = build_model(args, spec, layers)
            report(f"{label}: {layers or 'all'} blocks, {args.batch} x {seq} ({index + 1} of {len(planned)})")
            groups.setdefault((label, axis), []).extend(
                compare_modes(
                    model,
                    modes,
                    batch=args.batch,
                    seq=seq,
                    dtype=args.dtype[0],
                    budget=args.budget,
                    repeats=args.repeats,
                    name=label,
                    kernels=args.kernels,
                )
            )
    records = [r for group in groups.values() for r in group]
    Console(width=None if sys.stdout.isatty() else 160).print(step_table(records))
    if args.json:
        write_atomic(args.json, json.dumps([r.to_json() for r in records], indent=2) + "\n", force=args.force)
    if args.plot:
        plot(groups, args.plot, args.force)
    if args.doc:
        text = replace_heading_section(_read(args.doc), MODES_HEADING, markdown(groups, command, args.plot, args.doc), TITLE)
        write_atomic(args.doc, text, force=args.force)


def measure_drift(args: argparse.Namespace, console: Console, command: str) -> None:
    """The reversible stack at each depth of each model: at random init, then after --train-steps steps (see --drift)."""
    from bwsk.training.experiments.depth_drift import converted, measure_depth, text_batches, train

    if any(axis != "layers" for axis, _ in args.sweep or []):
        raise BwskError("--drift sweeps depth only (--sweep layers=N,N,...)")
    if args.train_steps < 0:
        raise BwskError(f"--train-steps must be at least 0, not {args.train_steps}")
    records = []
    planned = [(spec, layers) for spec in args.model or [f"{DEFAULT_MODEL}:tiny"] for _, layers, _ in runs(args)]
    with progress_lines(console) as report:
        for index, (spec, layers) in enumerate(planned):
            base, label = build_model(args, spec, layers)
            report(f"{label}: {layers or 'all'} blocks, {args.batch} x {args.seq} ({index + 1} of {len(planned)})")
            model = converted(base.train())
            ids = next(text_batches(args.batch, args.seq, model.config.vocab_size)).to(args.device)
            records += measure_depth(model, ids, dtypes=args.dtype, state="random init", name=label)
            if args.train_steps:
                train(model, args.train_steps, batch=args.batch, seq=args.seq, dtype=DTYPES[args.dtype[0]])
                records += measure_depth(model, ids, dtypes=args.dtype, state=f"trained {args.train_steps} steps", name=label)
            del model, base
            gc.collect()  # a converted model is a reference cycle (each layer's forward refers to the layer): free it now
            if args.json:  # after every run: what was measured survives a later one that fails
                write_atomic(args.json, json.dumps([r.to_json() for r in records], indent=2) + "\n", force=True)
    Console(width=None if sys.stdout.isatty() else 200).print("\n".join(depth_report.table_lines(records)))
    if args.plot:
        write_atomic(args.plot, depth_report.plot(records), force=args.force)
    if args.doc:
        text = depth_report.section(records, command, args.plot, args.doc)
        write_atomic(args.doc, depth_report.with_section(_read(args.doc), text, TITLE), force=args.force)


FAKE_SHAPES = {  # published shapes of models outside the zoo (Meta's config.json files); rope kept default (no bytes)
    "llama-3.2-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
    ),
    "llama-3-8b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        tie_word_embeddings=False,
        max_position_embeddings=8192,
    ),
}


def fake_config(name: str, layers: int | None):
    """The config of a zoo model or of one of `FAKE_SHAPES` (at `layers` blocks when given)."""
    import transformers

    if name in FAKE_SHAPES:
        config = transformers.LlamaConfig(
            vocab_size=128256,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
            rms_norm_eps=1e-5,
            bos_token_id=128000,
            eos_token_id=128001,
            use_cache=False,
            **FAKE_SHAPES[name],
        )
    else:
        config = zoo.make_config(name)
    if layers is not None:
        config.num_hidden_layers = layers
    return config


def measure_fit(args: argparse.Namespace, console: Console, command: str) -> None:
    """--fake --fit: what fits each budget, per model, mode and variant (`bwsk.training.experiments.memory_fit`); the
    table, and --json (fits and every measured step, written as each fit is found), --plot and --doc (its own section)."""
    from bwsk.training.experiments import fit_report
    from bwsk.training.experiments.memory_fit import FIT_SEQ, fit_model

    if len(args.dtype) > 1 or args.kernels != ["auto"]:
        raise BwskError("--fit measures one --dtype with the default kernels")
    modes = list(dict.fromkeys(["conventional", *args.mode]))
    fits, steps, caps = [], [], {}
    start = time.perf_counter()

    def save() -> None:
        if args.json:
            payload = {"command": command, "fits": [f.to_json() for f in fits], "steps": [s.to_json() for s in steps]}
            write_atomic(args.json, json.dumps(payload, indent=2) + "\n", force=True)

    with progress_lines(console) as report:

        def stepped(step) -> None:
            steps.append(step)
            report(f"{step.model}: {step.mode}, {step.loss} loss, {step.optimizer}, {step.batch} x {step.seq}")

        for name in args.model or ["pythia-410m"]:
            config = fake_config(name, args.layers)
            cap = args.positions or getattr(config, "max_position_embeddings", None)
            caps[name] = cap
            config.max_position_embeddings = max(cap or 0, FIT_SEQ)
            fit_model(
                config,
                name,
                budgets=args.fit,
                dtype=DTYPES[args.dtype[0]],
                modes=modes,
                variants=args.variants,
                cap=cap,
                analyzed_budget=args.budget,
                on_fit=lambda fit: (fits.append(fit), save()),
                on_step=stepped,
            )
    seconds = time.perf_counter() - start
    print("\n".join(fit_report.table_lines(fits)))
    print(f"{len(steps)} fake steps in {seconds:.0f} s")
    save()
    if args.plot:
        write_atomic(args.plot, fit_report.plot(steps, args.fit), force=args.force)
    if args.doc:
        text = fit_report.section(fits, steps, command, seconds, caps, args.plot, args.doc)
        write_atomic(args.doc, fit_report.with_section(_read(args.doc), text, TITLE), force=args.force)


def measure_frontier(args: argparse.Namespace, console: Console, command: str) -> None:
    """--frontier: per model, the analyzed plan and torch's SAC ILP at each budget, checkpoint, reversible and
    conventional (`bwsk.training.modes.frontier`); the table, --json, --plot and --doc (its own section)."""
    import dataclasses

    from bwsk.training.experiments import frontier_report
    from bwsk.training.modes.frontier import measure_frontier as frontier_points

    if len(args.dtype) > 1:
        raise BwskError("--frontier measures one --dtype at a time")
    groups = {}
    with progress_lines(console) as report:
        for name in args.model or ["pythia-410m"]:
            config = fake_config(name, args.layers)
            config.max_position_embeddings = max(config.max_position_embeddings, args.seq)
            groups[name] = frontier_points(
                config,
                batch=args.batch,
                seq=args.seq,
                budgets=args.frontier,
                dtype=DTYPES[args.dtype[0]],
                fake=args.fake,
                name=name,
                progress=report,
            )
    shape = f"{args.batch} x {args.seq} tokens, {args.dtype[0]}, " + ("under FakeTensorMode" if args.fake else "real tensors")
    shape += "" if args.layers is None else f", {args.layers} blocks"
    for name, points in groups.items():
        print(f"{name} ({shape})")
        print("\n".join(frontier_report.table_lines(points)))
        print(frontier_report.verdict(points)[1])
    if args.json:
        payload = {"command": command, "points": [dataclasses.asdict(p) for points in groups.values() for p in points]}
        write_atomic(args.json, json.dumps(payload, indent=2) + "\n", force=args.force)
    if args.plot:
        write_atomic(args.plot, frontier_report.plot(groups), force=args.force)
    if args.doc:
        link = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.doc))) if args.plot else None
        text = frontier_report.section(groups, command, link, shape)
        write_atomic(args.doc, frontier_report.with_section(_read(args.doc), text, TITLE), force=args.force)


def measure_fake(args: argparse.Namespace, console: Console, command: str) -> None:
    """Every mode (conventional always) and variant of each full-size model under FakeTensorMode
    (`bwsk.training.modes.fake_step`): peak bytes and the categories at the peak, FLOPs per step and their ratio to
    conventional; with --cpu-time real steps at reduced size timed beside their FLOPs; --json, and --doc (its own
    section, `bwsk.training.experiments.full_size_report`). Positions are extended to --seq (or --positions) where a
    config has fewer (rotary: no bytes depend on it); the KV cache is off in every mode."""
    from bwsk.training.experiments import full_size_report
    from bwsk.training.modes.fake_step import measure_step
    from bwsk.training.trainer.optimizer_in_backward import OptimizerInBackward

    if len(args.dtype) > 1 or len(args.kernels) > 1:
        raise BwskError("--fake measures one --dtype and one --kernels at a time")
    modes = list(dict.fromkeys(["conventional", *args.mode]))
    steps, times = [], []
    with progress_lines(console) as report:
        for name, (_, layers, seq) in [(name, run) for name in args.model or ["pythia-410m"] for run in runs(args)]:
            config = fake_config(name, layers)
            config.max_position_embeddings = max(config.max_position_embeddings, seq, args.positions or 0)
            for mode, variant in [(mode, variant) for mode in modes for variant in args.variants]:
                chunked, in_backward = VARIANTS[variant]
                report(f"{name}: {mode}, {variant}, {args.batch} x {seq} under FakeTensorMode")
                steps.append(
                    measure_step(
                        config,
                        mode,
                        batch=args.batch,
                        seq=seq,
                        dtype=DTYPES[args.dtype[0]],
                        chunked=chunked,
                        budget=args.budget,
                        kernels=args.kernels[0],
                        name=name,
                        optimizer_in_backward=OptimizerInBackward if in_backward else None,
                    )
                )
        if args.cpu_time:  # the first model only: every mode's copy of it, with AdamW, is in memory at once
            name = (args.model or ["pythia-410m"])[0]
            report(f"{name}: real steps at {CPU_TIME_LAYERS} blocks x {CPU_TIME_SEQ} tokens, timed")
            times = cpu_times(args, name, modes)
    print(f"FakeTensorMode + MemTracker, {steps[0].device}, {steps[0].dtype}; GiB at the step's peak")
    print("\n".join(full_size_report.table_lines(steps)))
    if times:
        print("\n".join(full_size_report.cpu_time_lines(times)))
    if args.json:
        payload = {"command": command, "steps": [s.to_json() for s in steps], "cpu_times": [t.__dict__ for t in times]}
        write_atomic(args.json, json.dumps(payload, indent=2) + "\n", force=args.force)
    if args.doc:
        text = full_size_report.section(steps, times, command)
        write_atomic(args.doc, full_size_report.with_section(_read(args.doc), text, TITLE), force=args.force)


def cpu_times(args: argparse.Namespace, name: str, modes: list[str]):
    """Real steps of `name` cut to `CPU_TIME_LAYERS` blocks at batch 1 x `CPU_TIME_SEQ`, every mode timed side by side
    (`compare_modes`, chunked loss, AdamW), beside the FLOPs counted for the same fake step; in fp32 whatever --dtype
    says (a cpu without bf16 matrix units emulates bf16 products, tens of times slower: no ratio of GPU interest)."""
    import transformers

    from bwsk.training.experiments.full_size_report import CpuTime
    from bwsk.training.modes.fake_step import measure_step

    config = fake_config(name, CPU_TIME_LAYERS)
    config.max_position_embeddings = max(config.max_position_embeddings, CPU_TIME_SEQ)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    records = compare_modes(model, modes, batch=1, seq=CPU_TIME_SEQ, budget=args.budget, repeats=args.repeats, name=name)
    del model
    gc.collect()
    flops = {mode: measure_step(config, mode, batch=1, seq=CPU_TIME_SEQ, budget=args.budget).flops for mode in modes}
    return [
        CpuTime(
            name, r.mode, CPU_TIME_LAYERS, CPU_TIME_SEQ, r.step_seconds, r.step_time_ratio or 0.0, flops[r.mode] / flops["conventional"]
        )
        for r in records
    ]


def _read(path: str) -> str | None:
    return open(path, encoding="utf-8").read() if os.path.exists(path) else None


if __name__ == "__main__":
    sys.exit(main())
