"""A script of `benchmarks/` loaded as a module, so tests call its `main` and helpers in-process."""

from __future__ import annotations

import functools
import importlib.util
import sys
from types import ModuleType

from paths import ROOT


@functools.cache
def benchmark(name: str) -> ModuleType:
    """`benchmarks/NAME.py` as the module `benchmarks_NAME`, loaded once per process and registered in `sys.modules`
    (its dataclasses look their module up by name)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
