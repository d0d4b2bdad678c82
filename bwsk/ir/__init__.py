"""The combinator IR: terms, types, programs, the text form, the verifier, the evaluator and rewriting.

Invariant: nothing here imports torch.export, torch.fx or transformers; reading a program
can only ever call ATen operators.
"""

from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.ir.program import Program

__all__ = ["Program", "parse", "print_program"]
