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

from bwsk.frontend import compile_source, faithfulness
from bwsk.ir.printer import print_definition, print_program
from bwsk.passes.pipeline import analyze
from bwsk.render.report import finding_lines, share_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bwsk-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-70m", help="zoo model (default pythia-70m)")
    parser.add_argument("--layers", type=int, default=2, help="depth (default 2)")
    parser.add_argument("--seq", type=int, default=16, help="example sequence length (default 16)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    console = Console(soft_wrap=True)

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
            console.print(_shorten(print_definition(definition)), soft_wrap=True, highlight=False, markup=False)

    console.rule("the IR evaluated against torch.export, same weights and inputs")
    report = faithfulness(compiled)
    console.print(str(report))

    console.rule("where it keeps information (S) and where it erases it (K)")
    analysis = analyze(program)
    for line in [share_line(analysis), *finding_lines(analysis)]:
        console.print(line, highlight=False)
    console.print(
        "\nNext: bwsk-compile pythia-410m --emit phases            (full size, meta device, no weights)\n"
        "      bwsk-compile pythia-410m --emit svg --collapse layers -o pythia-410m.svg"
    )
    return 0 if report.ok else 1


def _shorten(line: str, limit: int = 400) -> str:
    return line if len(line) <= limit else f"{line[:limit]} ... ({len(line) - limit:,} more characters)"


def _first_layer_prefix(program) -> str:
    """The module path of the first residual branch's enclosing layer (e.g. gpt_neox.layers.0)."""
    for definition in program.defs:
        if definition.name.endswith(".branch") and definition.module:
            return definition.module
    return program.defs[0].module or ""


if __name__ == "__main__":
    sys.exit(main())
