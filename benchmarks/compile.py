"""Compile every zoo model at full size (meta device, no weights) and time each stage.

    python benchmarks/compile.py [--models pythia-410m gpt2 ...] [--seq 128] [--markdown FILE]

Per model: torch.export.export, run_decompositions (Core ATen), bwsk lowering,
printing and parsing (parse includes verification); IR size in definitions and
bytes. The last column compares lowering + printing + parsing with the
torch.export call alone, measured in the same run.
"""

from __future__ import annotations

import argparse
import time
import warnings

from bwsk.frontend import tensor_outputs, zoo
from bwsk.frontend.compile import forward_parameters
from bwsk.frontend.lowering import program_from_export
from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program


def measure(name: str, seq: int) -> dict:
    model = zoo.build(name, device="meta")
    inputs = zoo.model_inputs(model, batch=1, seq=seq)
    start = time.perf_counter()
    exported = tensor_outputs.export(model, inputs)
    t_export = time.perf_counter() - start
    start = time.perf_counter()
    core = exported.run_decompositions()
    t_decompose = time.perf_counter() - start
    prefix = "model" if isinstance(tensor_outputs.traceable(model), tensor_outputs.TensorOutputs) else ""
    start = time.perf_counter()
    program = program_from_export(core, name=name, strip_prefix=prefix, input_names=forward_parameters(model))
    t_lower = time.perf_counter() - start
    start = time.perf_counter()
    text = print_program(program)
    t_print = time.perf_counter() - start
    start = time.perf_counter()
    assert parse(text) == program
    t_parse = time.perf_counter() - start
    return {
        "model": name,
        "export_s": t_export,
        "decompose_s": t_decompose,
        "lower_s": t_lower,
        "print_s": t_print,
        "parse_s": t_parse,
        "defs": len(program.defs),
        "bytes": len(text),
        "ratio": (t_lower + t_print + t_parse) / t_export,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=zoo.names())
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    header = "| model | export s | decompose s | lower s | print s | parse s | defs | IR bytes | (lower+print+parse) / export |"
    print(header)
    print("|" + "---|" * 9)
    for name in args.models:
        row = measure(name, args.seq)
        print(
            f"| {row['model']} | {row['export_s']:.2f} | {row['decompose_s']:.2f} | {row['lower_s']:.2f} | "
            f"{row['print_s']:.3f} | {row['parse_s']:.2f} | {row['defs']:,} | {row['bytes']:,} | {row['ratio']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
