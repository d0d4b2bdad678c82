"""bwsk: a combinator IR over ATen and compiler passes that find where a network preserves information.

program = bwsk.parse(text)            # IR text -> verified Program; str(program) prints it
program = bwsk.lower(exported)        # torch.export.ExportedProgram -> Program (Core ATen)
program = bwsk.load("pythia-70m")     # export archive, Hugging Face model or zoo name -> Program
outputs = program(*inputs, params={name: tensor})
analysis = bwsk.analyze(program)      # classify, partition, couple, memory, coordinate

`lower`, `lower_module`, `load` (bwsk.frontend.compile) and `analyze` (bwsk.passes.pipeline)
are imported on first use, so `import bwsk` loads neither the frontend nor the passes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bwsk.errors import BwskError
from bwsk.ir.parser import parse
from bwsk.ir.program import Program

if TYPE_CHECKING:
    from bwsk.frontend.compile import load, lower, lower_module
    from bwsk.passes.pipeline import analyze

_ON_FIRST_USE = {
    "lower": "bwsk.frontend.compile",
    "lower_module": "bwsk.frontend.compile",
    "load": "bwsk.frontend.compile",
    "analyze": "bwsk.passes.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    raise AttributeError(f"module 'bwsk' has no attribute {name!r}")


__all__ = ["BwskError", "Program", "analyze", "load", "lower", "lower_module", "parse"]
