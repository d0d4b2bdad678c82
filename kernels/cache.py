"""Generated source text -> a module run from that text itself, with a copy in a private folder for triton.jit.

triton.jit reads a kernel's source (`inspect.getsourcelines`), so each generated module has
a file, `<cache dir>/bwsk_kernels_<sha256 prefix>.py`; the cache dir is $BWSK_KERNEL_CACHE,
else ~/.cache/bwsk/kernels. Invariants:

- What runs is the text the caller generated: it is compiled in memory under the file's path
  and its lines are pinned in `linecache`, so inspect and triton read those same lines. No
  bytecode is read or written (`__pycache__` is never consulted), and nothing found on disk,
  before or after the check, is ever executed.
- The folder is created 0700 and refused (`KernelCacheError`, one line) when it is a symbolic
  link, not a folder, not owned by the user, or writable by group or others. A cache file that
  is a symbolic link or not a regular file is refused; one whose bytes are not the text is
  rewritten (atomically, through a temporary file in the same folder).
- One text is executed at most once per process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import linecache
import os
import stat
import sys
from pathlib import Path
from types import ModuleType

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError

_PREFIX = "bwsk_kernels_"
_imported: dict[str, ModuleType] = {}


class KernelCacheError(BwskError):
    """The kernel cache folder or one of its files is not safe to use."""


def cache_dir() -> Path:
    return Path(os.environ.get("BWSK_KERNEL_CACHE") or Path.home() / ".cache" / "bwsk" / "kernels")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def path_for(text: str) -> Path:
    return cache_dir() / f"{_PREFIX}{digest(text)}.py"


def private_folder() -> Path:
    """The cache folder, created 0700 if missing; KernelCacheError unless it is a folder only the user can write."""
    folder = cache_dir()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        info = folder.lstat()
    except OSError as error:
        raise KernelCacheError(f"{folder}: cannot create the kernel cache folder ({error.strerror or error})") from None
    fix = "make it a private folder of yours (chmod 700) or set BWSK_KERNEL_CACHE to one"
    if stat.S_ISLNK(info.st_mode):
        raise KernelCacheError(f"{folder}: the kernel cache folder is a symbolic link; {fix}")
    if not stat.S_ISDIR(info.st_mode):
        raise KernelCacheError(f"{folder}: the kernel cache folder is not a folder; {fix}")
    if info.st_uid != os.getuid():
        raise KernelCacheError(f"{folder}: the kernel cache folder is owned by user id {info.st_uid}, not by you; {fix}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KernelCacheError(
            f"{folder}: the kernel cache folder is writable by group or others (mode {stat.filemode(info.st_mode)}); {fix}"
        )
    return folder


def _stored(path: Path, limit: int) -> bytes | None:
    """Up to `limit` bytes of the cache file at `path` (None when missing), read without following a symbolic link."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise KernelCacheError(f"{path}: a kernel cache file is a symbolic link; remove it") from None
        raise KernelCacheError(f"{path}: cannot read the kernel cache file ({error.strerror or error})") from None
    with os.fdopen(handle, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise KernelCacheError(f"{path}: a kernel cache file is not a regular file; remove it")
        return stream.read(limit)


def write(text: str) -> Path:
    """The cache file holding `text` in the private folder, (re)written unless it already holds exactly `text`."""
    data = text.encode("utf-8")
    path = private_folder() / path_for(text).name
    if _stored(path, len(data) + 1) != data:
        write_atomic(str(path), data, force=True)
    return path


def load(text: str) -> ModuleType:
    """The module whose source is `text`: its cache file written, then `text` itself executed under the file's name."""
    key = digest(text)
    if key in _imported:
        return _imported[key]
    path = str(write(text))
    lines = text.splitlines(keepends=True)
    linecache.cache[path] = (len(text), None, lines, path)  # mtime None: checkcache never rereads the file
    name = f"{_PREFIX}{key}"
    module = ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    try:
        exec(compile(text, path, "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    _imported[key] = module
    return module
