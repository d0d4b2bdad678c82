"""Names a package exports without importing them: each is imported from its module on first access (PEP 562).

    __getattr__, __dir__ = on_first_use(__name__, {"make_reversible": "bwsk.training.reversible.convert"})

Invariant: importing the package imports none of the listed modules; `package.name` is the
object `module.name`, imported once (Python caches the module).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def on_first_use(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: `exports` maps each public name to the module defining it."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
