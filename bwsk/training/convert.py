"""The old path of `bwsk.training.reversible.convert`, kept for one release: import from `bwsk` instead."""

from bwsk.training.reversible.convert import ConversionReport, make_reversible, plain_autograd, reversible_runtime, set_kernels

__all__ = ["ConversionReport", "make_reversible", "plain_autograd", "reversible_runtime", "set_kernels"]
