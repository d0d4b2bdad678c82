"""bwsk: a combinator IR over ATen and compiler passes that find where a network preserves information.

program = bwsk.parse(text)            # IR text -> verified Program; str(program) prints it
program = bwsk.lower(exported)        # torch.export.ExportedProgram -> Program (Core ATen)
program = bwsk.load("pythia-70m")     # export archive, Hugging Face model or zoo name -> Program
outputs = program(*inputs, params={name: tensor})
analysis = bwsk.analyze(program)      # classify, partition, couple, memory, coordinate

model = bwsk.make_reversible(model)   # a Hugging Face causal LM whose layers train as reversible coupling blocks
model = bwsk.apply_mode(model, "checkpoint")   # conventional | checkpoint | analyzed | reversible
with bwsk.plain_autograd(model): ...  # a converted model with ordinary autograd (the reference)

Every name but `BwskError` is imported on first use, so `import bwsk` loads neither torch, the
grammar, the frontend, the passes, nor the training runtime (a command's `--help` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bwsk.errors import BwskError
from bwsk.lazy import on_first_use

if TYPE_CHECKING:
    from bwsk.frontend.compile import load, lower, lower_module
    from bwsk.ir.parser import parse
    from bwsk.ir.program import Program
    from bwsk.passes.pipeline import analyze
    from bwsk.training.modes.apply import apply_mode
    from bwsk.training.reversible.convert import make_reversible, plain_autograd, set_kernels
    from bwsk.training.reversible.huggingface import load_reversible, register

__getattr__, __dir__ = on_first_use(
    __name__,
    {
        "parse": "bwsk.ir.parser",
        "Program": "bwsk.ir.program",
        "lower": "bwsk.frontend.compile",
        "lower_module": "bwsk.frontend.compile",
        "load": "bwsk.frontend.compile",
        "analyze": "bwsk.passes.pipeline",
        "make_reversible": "bwsk.training.reversible.convert",
        "plain_autograd": "bwsk.training.reversible.convert",
        "set_kernels": "bwsk.training.reversible.convert",
        "apply_mode": "bwsk.training.modes.apply",
        "load_reversible": "bwsk.training.reversible.huggingface",
        "register": "bwsk.training.reversible.huggingface",
    },
)

__all__ = [
    "BwskError",
    "Program",
    "analyze",
    "apply_mode",
    "load",
    "load_reversible",
    "lower",
    "lower_module",
    "make_reversible",
    "parse",
    "plain_autograd",
    "register",
    "set_kernels",
]
