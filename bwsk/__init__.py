"""bwsk: a combinator IR over ATen and compiler passes that find where a network preserves information.

program = bwsk.parse(text)            # IR text -> verified Program; str(program) prints it
program = bwsk.lower(exported)        # torch.export.ExportedProgram -> Program (Core ATen)
program = bwsk.load("pythia-70m")     # export archive, Hugging Face model or zoo name -> Program
outputs = program(*inputs, params={name: tensor})
analysis = bwsk.analyze(program)      # classify, partition, couple, memory, coordinate
"""

from bwsk.errors import BwskError
from bwsk.ir.parser import parse
from bwsk.ir.program import Program


def lower(exported, *, level: str = "core", name: str = "model", strip_prefix: str = "") -> Program:
    """Lower a torch.export ExportedProgram into a verified Program (see bwsk.frontend.compile.lower)."""
    from bwsk.frontend.compile import lower as lower_exported

    return lower_exported(exported, level=level, name=name, strip_prefix=strip_prefix)


def lower_module(model, args: tuple, *, level: str = "core") -> Program:
    """Export an nn.Module (or transformers model) on example `args` and lower it (see bwsk.frontend.compile.lower_module)."""
    from bwsk.frontend.compile import lower_module as lower_in_memory

    return lower_in_memory(model, args, level=level)


def load(spec: str, **options) -> Program:
    """The Program of an export archive, a Hugging Face directory or hub id, or a zoo name (see bwsk.frontend.compile.load)."""
    from bwsk.frontend.compile import load as load_source

    return load_source(spec, **options)


def analyze(program: Program, **options):
    """Trace `program` and run the analysis passes (see bwsk.passes.pipeline.analyze)."""
    from bwsk.passes.pipeline import analyze as run_analysis

    return run_analysis(program, **options)


__all__ = ["BwskError", "Program", "analyze", "load", "lower", "lower_module", "parse"]
