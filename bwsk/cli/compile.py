"""`bwsk-compile`: read a program, verify it, and emit it.

Every user error is one line on stderr and exit code 2; no traceback unless
BWSK_DEBUG=1. Outputs are written atomically and never replace an existing file
without --force.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from bwsk.atomic import check_destination, write_atomic
from bwsk.cli.arguments import EXIT_USER_ERROR, ArgumentParser, positive_int
from bwsk.errors import BwskError, first_line, one_line

if TYPE_CHECKING:  # the IR (torch, the grammar) is imported once a command line is parsed: --help stays fast
    from bwsk.ir.program import Program

EXIT_MISMATCH = 1
EXIT_INTERNAL_ERROR = 3

DESCRIPTION = """\
Compile a model into bwsk's combinator IR and emit it.

INPUT is recognised by content, not by extension:
  - a .bwsk IR text file (or - for standard input): parsed, verified and
    printed in canonical form, so `--emit ir` doubles as a formatter;
  - an archive written by torch.export.save (.pt2, or .pt);
  - a Hugging Face model directory (config.json, weights optional) or hub id;
  - a built-in zoo model: {zoo};
  - a torch.save pickle, only with --trust-pickle (loading a pickle runs code).

Models are exported with torch.export, lowered to Core ATen (or the training
IR with --level training) and verified. Residual blocks read as S terms,
chains as B, values used twice as W.
"""

EPILOG = """\
examples:
  bwsk-compile pythia-70m --emit ir                  # full size, meta device, no weights
  bwsk-compile pythia-70m --tiny --layers 2 --verify # evaluate the IR against torch
  bwsk-compile model.pt2 --emit ir -o model.bwsk
  bwsk-compile model.bwsk -o model.bwsk --force      # format in place
  bwsk-compile pythia-410m --emit phases             # where it keeps and erases information
  bwsk-compile pythia-410m --emit svg --collapse layers -o pythia.svg
  bwsk-compile pythia-70m --tiny --layers 2 --emit triton -o k.py   # fused seam kernels
  bwsk-compile gpt2 --tiny --layers 1 --seq 8 --check-classification

--verify evaluates the IR on the stored example inputs (random ones when none
are stored) with the model's weights (random when none) and compares it with
the ExportedProgram: it prints the largest absolute and relative error (the
largest absolute error over the largest reference magnitude) and exits 1 when
the relative error exceeds 1e-5.

errors are one line on stderr (FILE:LINE:COL: message for IR text), exit code 2.
"""


def build_parser() -> argparse.ArgumentParser:
    from bwsk.frontend import zoo

    parser = ArgumentParser(
        prog="bwsk-compile",
        description=DESCRIPTION.format(zoo=", ".join(zoo.names())),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="IR text, export archive, Hugging Face model or zoo name")
    parser.add_argument(
        "--emit",
        choices=["ir", "phases", "json", "dot", "svg", "triton"],
        default="ir",
        help="ir: canonical IR text (default); phases: tables of S-phases, K-barriers and per-layer S share; "
        "json: the whole analysis (docs/analysis.schema.json); dot / svg: the phase graph; "
        "triton: a Python module of fused Triton kernels for the coupling seams (add/subtract + norm, and backward)",
    )
    parser.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of standard output (atomically)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it already exists")
    analysis = parser.add_argument_group("analysis")
    analysis.add_argument(
        "--passes",
        metavar="LIST",
        help="comma-separated passes: classify (S/K with reasons), partition (S-phases, K-barriers), couple (reversible "
        "coupling candidates), memory (store/recompute/invert plan), coordinate (communication per sharding axis); "
        "required passes are added; default for phases/json/dot/svg: all",
    )
    analysis.add_argument(
        "--print-after",
        action="append",
        default=[],
        metavar="PASS",
        help="print the IR annotated by PASS's findings to stderr (repeatable)",
    )
    analysis.add_argument("--collapse", choices=["layers"], help="dot/svg: fold identical layers into one cluster")
    analysis.add_argument(
        "--check-classification",
        action="store_true",
        help="confirm every S/K verdict numerically (Jacobian rank or a witness); exit 1 on a failure",
    )
    model = parser.add_argument_group("models")
    model.add_argument("--level", choices=["core", "training"], default="core", help="Core ATen (default) or the training-level IR")
    model.add_argument("--verify", action="store_true", help="evaluate the IR and compare it with the ExportedProgram (exit 1 on mismatch)")
    model.add_argument("--tiny", action="store_true", help="zoo / config models: shrink the width (keeps the architecture)")
    model.add_argument("--layers", type=positive_int, metavar="N", help="zoo / config models: override the depth")
    model.add_argument("--batch", type=positive_int, default=1, metavar="N", help="example batch size (default 1)")
    model.add_argument("--seq", type=positive_int, default=128, metavar="N", help="example sequence length (default 128)")
    model.add_argument("--dynamic-batch", action="store_true", help="export with a symbolic batch dimension")
    model.add_argument("--trust-pickle", action="store_true", help="allow loading a torch.save pickle (runs its code)")
    model.add_argument(
        "--trust-remote-code", action="store_true", help="Hugging Face models: allow running the model's own Python files (auto_map)"
    )
    model.add_argument(
        "--input-shape",
        action="append",
        type=input_shape,
        metavar="SHAPE",
        help="pickles: example input shape, e.g. 1x16 or 1x128:i64 (repeat per input)",
    )
    return parser


def input_shape(text: str) -> str:
    """An argparse type: `text` when it is a valid `--input-shape` (see InputSpec), else a one-line argparse error."""
    from bwsk.frontend.sources import InputSpec

    try:
        InputSpec.parse(text)
    except BwskError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return text


def is_ir_text(spec: str) -> bool:
    """IR text is anything that is not a zip archive, a pickle or a directory (bad text is then a located error)."""
    if spec == "-":
        return True
    if not os.path.isfile(spec):
        return False
    try:
        with open(spec, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False  # the model frontend reports the unreadable file
    return not (head.startswith(b"PK") or head.startswith(b"\x80"))


def read_program(spec: str) -> Program:
    """Parse and verify the IR text in `spec` (a path or - for stdin)."""
    from bwsk.ir.parser import decode, parse

    if spec == "-":
        return parse(decode(sys.stdin.buffer.read(), "<stdin>"), "<stdin>")
    try:
        with open(spec, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise BwskError(f"{spec}: cannot read ({error.strerror or error})") from None
    return parse(decode(data, spec), spec)


def compile_model(args: argparse.Namespace) -> tuple[Program, dict | None]:
    """The lowered program and, when the model has real weights, its state tensors by @name."""
    from bwsk.frontend.compile import compile_source
    from bwsk.frontend.faithfulness import faithfulness

    compiled = compile_source(
        args.input,
        level=args.level,
        trust_pickle=args.trust_pickle,
        trust_remote_code=args.trust_remote_code,
        input_shapes=args.input_shape,
        tiny=args.tiny,
        layers=args.layers,
        batch=args.batch,
        seq=args.seq,
        device="cpu" if args.verify or args.check_classification else "meta",  # the check runs the model's own constants
        dynamic_batch=args.dynamic_batch,
        progress=sys.stderr.isatty(),
    )
    if args.verify:
        report = faithfulness(compiled)
        print(one_line(f"verify {compiled.program.name}: {report}"), file=sys.stderr)
        if not report.ok:
            raise VerificationFailed(str(report))
    has_weights = all(t.device.type != "meta" for t in compiled.state.values())
    return compiled.program, dict(compiled.state) if has_weights else None


class VerificationFailed(Exception):
    """--verify found the IR and the ExportedProgram disagree (exit code 1)."""


def emit(text: str, output: str | None, force: bool) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(output, text, force=force)


def run(args: argparse.Namespace) -> int:
    from bwsk.ir.printer import print_program

    if args.output is not None:
        check_destination(args.output, force=args.force)  # before the work, which can take minutes
    if is_ir_text(args.input):
        if args.verify:
            raise BwskError(f"{args.input}: --verify compares a lowered model with its export; IR text has none")
        program, weights = read_program(args.input), None
    else:
        program, weights = compile_model(args)
    if args.check_classification:
        return EXIT_MISMATCH if check_classification(program, weights).failures else 0
    wants_analysis = args.emit != "ir" or args.passes or args.print_after
    if not wants_analysis:
        emit(print_program(program), args.output, args.force)
        return 0
    from bwsk.passes.pipeline import DEFAULT_PASSES, analyze

    passes = [p.strip() for p in args.passes.split(",") if p.strip()] if args.passes else list(DEFAULT_PASSES)
    if args.emit == "triton" and "seams" not in passes:
        passes.append("seams")
    analysis = analyze(program, passes=passes, after_pass=printer_after(passes, args.print_after, sys.stderr), weights=weights)
    emit(render(analysis, args), args.output, args.force)
    return 0


def check_classification(program, weights):
    """`--check-classification`: the numerical check with a progress bar on a terminal, printed as tables to stdout."""
    from rich.console import Console
    from rich.progress import Progress

    from bwsk.passes.classify.check import check_classification as run_check
    from bwsk.render.classification_check import print_classification_check

    with Progress(console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=True) as progress:
        report = run_check(program, weights, lambda calls: progress.track(calls, description="checking verdicts"))
    print_classification_check(report, Console(file=sys.stdout, width=160, soft_wrap=False))
    return report


def printer_after(passes: list[str], names: list[str], stream: TextIO):
    """The `--print-after` callback: after each named pass, the program annotated with its notes."""
    from bwsk.ir.printer import print_program
    from bwsk.passes.manager import complete
    from bwsk.render.notes import notes_after

    pipeline = [kind.name for kind in complete(passes)]
    unknown = sorted(set(names) - set(pipeline))
    if unknown:
        raise BwskError(f"--print-after {unknown[0]}: that pass is not in the pipeline ({', '.join(pipeline)})")

    def show(kind, analysis) -> None:
        if kind.name in names:
            stream.write(f"# ---- after pass {kind.name} ----\n")
            stream.write(print_program(analysis.program, notes_after(kind, analysis)))

    return show


def render(analysis, args: argparse.Namespace) -> str:
    """The text of `--emit` for an analysed program."""
    from bwsk.ir.printer import print_program

    if args.emit == "ir":
        return print_program(analysis.program)
    if args.emit == "json":
        import json

        from bwsk.render.report import analysis_json

        return json.dumps(analysis_json(analysis), indent=1) + "\n"
    if args.emit == "phases":
        import io

        from rich.console import Console

        from bwsk.render.report import print_phases

        to_terminal = args.output is None and sys.stdout.isatty()
        buffer = io.StringIO()
        console = Console(
            file=buffer, width=None if to_terminal else 140, force_terminal=to_terminal, color_system="auto" if to_terminal else None
        )
        print_phases(analysis, console)
        return buffer.getvalue()
    if args.emit == "triton":
        from bwsk.kernels.codegen import emit_model
        from bwsk.passes.seams import Seams

        seams = analysis.result(Seams)
        if not seams:
            raise BwskError(f"{args.input}: no coupling blocks (no pre-norm residual pairs), so there are no seams to emit kernels for")
        return emit_model(analysis.program.name, seams)
    from bwsk.render.graph import to_dot, to_svg

    return (to_dot if args.emit == "dot" else to_svg)(analysis, collapse=args.collapse)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.environ.get("BWSK_DEBUG"):
        warnings.filterwarnings("ignore")  # library deprecation chatter; errors are still reported
    try:
        return run(args)
    except BwskError as error:
        print(error.render(), file=sys.stderr)
        return EXIT_USER_ERROR
    except VerificationFailed:
        return EXIT_MISMATCH
    except KeyboardInterrupt:
        print("bwsk-compile: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug in bwsk: still one line unless debugging
        if os.environ.get("BWSK_DEBUG"):
            traceback.print_exc()
        else:
            print(f"bwsk-compile: internal error: {one_line(first_line(error))} (set BWSK_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
