"""`bwsk-demo`: compile a built-in transformer to the IR, check it against torch, show one layer.

Runs offline on an embedded default model (the Pythia-70M architecture at tiny
width, random weights); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from rich.console import Console

from bwsk.cli.arguments import EXIT_USER_ERROR, ArgumentParser, positive_int
from bwsk.errors import BwskError, shortened
from bwsk.frontend import zoo


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="bwsk-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default="pythia-70m",
        choices=zoo.names(),
        metavar="MODEL",
        help=f"zoo model: {', '.join(zoo.names())} (default pythia-70m)",
    )
    parser.add_argument("--layers", type=positive_int, default=2, help="depth (default 2)")
    parser.add_argument("--seq", type=positive_int, default=16, help="example sequence length (default 16)")
    parser.add_argument("--train-layers", type=positive_int, default=12, help="depth of the model in the training step (default 12)")
    parser.add_argument(
        "--train-seq", type=positive_int, default=256, help="tokens per sequence in the training step, batch 2 (default 256)"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    try:
        return _demo(args, Console(soft_wrap=True))
    except BwskError as error:
        print(f"bwsk-demo: {error.render()}", file=sys.stderr)
        return EXIT_USER_ERROR


def _demo(args: argparse.Namespace, console: Console) -> int:
    """Compile, verify and summarise `args.model`; exit code 1 when the IR disagrees with torch."""
    from bwsk.frontend.compile import compile_source  # torch, the grammar and the passes load after --help
    from bwsk.frontend.faithfulness import faithfulness
    from bwsk.ir.printer import print_definition, print_program
    from bwsk.passes.pipeline import analyze
    from bwsk.render.report import finding_lines, share_line

    start = time.perf_counter()
    with console.status(f"exporting and lowering {args.model} (tiny width, {args.layers} layers)"):
        compiled = compile_source(args.model, tiny=True, layers=args.layers, seq=args.seq, device="cpu", progress=False)
    program = compiled.program
    elapsed = time.perf_counter() - start
    text = print_program(program)
    console.rule(f"[bold]{args.model}[/] in the bwsk IR")
    console.print(
        f"{len(program.defs)} definitions, {len(program.state)} parameters/buffers, {len(text):,} bytes of IR, "
        f"lowered in {elapsed:.1f} s (Core ATen)"
    )

    layer = _first_layer_prefix(program)
    console.rule(f"one transformer layer: {layer}")
    for definition in program.defs:
        if definition.module and (definition.module + ".").startswith(layer + "."):
            console.print(shortened(print_definition(definition), 400), soft_wrap=True, highlight=False, markup=False)

    console.rule("the IR evaluated against torch.export, same weights and inputs")
    report = faithfulness(compiled)
    console.print(str(report))

    console.rule("where it keeps information (S) and where it erases it (K)")
    analysis = analyze(program)
    for line in [share_line(analysis), *finding_lines(analysis)]:
        console.print(line, highlight=False)
    _training_step(args, console)
    console.print(
        "\nNext: bwsk-compile pythia-410m --emit phases            (full size, meta device, no weights)\n"
        "      python benchmarks/memory.py --mode all --sweep layers=6,12,24   (memory against depth, every mode)"
    )
    return 0 if report.ok else 1


def _training_step(args: argparse.Namespace, console: Console) -> None:
    """One training step of the same model in conventional and reversible mode, measured side by side."""
    from bwsk.render.step_table import step_table
    from bwsk.training.modes.compare import compare_modes

    layers = args.train_layers
    console.rule("training in less memory: conventional beside reversible")
    model = zoo.build(args.model, tiny=True, layers=layers, device="cpu")
    with console.status("measuring one training step per mode (MemTracker: bytes, not RSS)"):
        records = compare_modes(model, ("conventional", "reversible"), batch=2, seq=args.train_seq, name=args.model)
    console.print(step_table(records, compact=True))
    conventional, reversible = records[0], records[-1]
    console.print(
        f"reversible keeps {reversible.activation_bytes / conventional.activation_bytes:.0%} of conventional's activation bytes "
        f"and peaks at {reversible.peak_bytes / conventional.peak_bytes:.0%} of its memory; the coupling blocks rebuild their "
        "inputs in backward instead of storing them (a converted model is a different function of the same weights, "
        "fine-tuned to recover).",
        highlight=False,
    )


def _first_layer_prefix(program) -> str:
    """The module path of the first residual branch's enclosing layer (e.g. gpt_neox.layers.0)."""
    for definition in program.defs:
        if definition.name.endswith(".branch") and definition.module:
            return definition.module
    return program.defs[0].module or ""


if __name__ == "__main__":
    sys.exit(main())
