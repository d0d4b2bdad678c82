"""Writing outputs without ever leaving a half-written file or clobbering one by accident."""

from __future__ import annotations

import os
import tempfile

from bwsk.errors import BwskError


def write_atomic(path: str, data: str | bytes, *, force: bool = False) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename.

    An existing `path` is replaced only with `force`; otherwise a BwskError is raised
    and the file is left untouched.
    """
    if os.path.isdir(path):
        raise BwskError(f"{path}: is a directory (expected a file name for the output)")
    if os.path.lexists(path) and not force:
        raise BwskError(f"{path}: already exists (pass --force to replace it)")
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
        raise BwskError(f"{path}: not a regular file (a link or a device); refusing to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BwskError(f"{path}: folder {folder} does not exist")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".bwsk-", suffix=".tmp")
        os.fchmod(handle, _mode_for(path))
    except OSError as error:
        raise BwskError(f"{path}: cannot write ({error.strerror or error})") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise BwskError(f"{path}: cannot write ({error.strerror or error})") from None
        raise


def _mode_for(path: str) -> int:
    """The replaced file's permissions, or what a new file gets under the umask (mkstemp would give 0600)."""
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
