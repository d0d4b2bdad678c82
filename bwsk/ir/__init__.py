"""The combinator IR: terms, types, programs, the text form, the verifier, the evaluator and rewriting.

Invariants: nothing here imports torch.export, torch.fx or transformers; reading a program
(parsing, verifying, evaluating it) runs no code it names but registered `aten`/`prims`
tensor operators and a few bounded Python operators (`bwsk.ir.ops`), and evaluates its
dimension expressions by bounded integer arithmetic (`bwsk.ir.dims`); see docs/ir.md.
"""

from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.ir.program import Program

__all__ = ["Program", "parse", "print_program"]
