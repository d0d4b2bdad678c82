"""Compiler passes over the combinator IR; each pass is one file, registered by name on import."""

from bwsk.passes import classify, coordinate, couple, memory, partition, seams  # noqa: F401  (importing registers the passes)
from bwsk.passes.manager import PassError, PassManager, complete
from bwsk.passes.registry import REGISTRY, Pass, lookup, register

__all__ = ["REGISTRY", "Pass", "PassError", "PassManager", "complete", "lookup", "register"]
