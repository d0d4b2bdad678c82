"""Generated source text -> an imported module, via a file named by the text's hash.

triton.jit reads a kernel's source from its file, so generated text must live in a real
file. The file is `<cache dir>/bwsk_kernels_<sha256 prefix>.py`; the cache dir is
$BWSK_KERNEL_CACHE, else ~/.cache/bwsk/kernels. Invariants: a file's content always
hashes to its name (written atomically; a file that does not match is rewritten);
one text is imported at most once per process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

_PREFIX = "bwsk_kernels_"
_imported: dict[str, ModuleType] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("BWSK_KERNEL_CACHE") or Path.home() / ".cache" / "bwsk" / "kernels")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def path_for(text: str) -> Path:
    return cache_dir() / f"{_PREFIX}{digest(text)}.py"


def write(text: str) -> Path:
    """The cache file holding `text`, written (atomically: temporary file, then rename) unless already there."""
    path = path_for(text)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".bwsk-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def load(text: str) -> ModuleType:
    """The module whose source is `text` (written to the cache and imported on first use)."""
    key = digest(text)
    if key in _imported:
        return _imported[key]
    path = write(text)
    name = f"{_PREFIX}{key}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _imported[key] = module
    return module
