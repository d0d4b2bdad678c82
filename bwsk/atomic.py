"""Writing outputs without ever leaving a half-written file, a stray temporary, or clobbering one by accident.

The data goes to a temporary file in the destination's folder, which is then renamed over the
destination. If SIGTERM or SIGHUP arrives while the temporary exists (on the main thread), the
temporary is removed first, then the signal takes its usual effect: the handler that was installed
before runs, or the process ends by the signal. SIGINT raises KeyboardInterrupt, which removes it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType

from bwsk.errors import BwskError

TEMPORARY_PREFIX = ".bwsk-"
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def check_destination(path: str, *, force: bool = False) -> str:
    """Raise BwskError unless `write_atomic(path, ..., force=force)` may write there; returns the folder.

    Callers check before long work too, so that a bad output name is reported before the work, not after.
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
    return folder


def write_atomic(path: str, data: str | bytes, *, force: bool = False) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename.

    An existing `path` is replaced only with `force` (see `check_destination`); otherwise a
    BwskError is raised and the file is left untouched. Invariant: when this returns or raises,
    no temporary is left.
    """
    folder = check_destination(path, force=force)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary: str | None = None
    with _TerminationGuard() as guard:
        try:
            with guard.deferred():
                handle, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=".tmp")
                stream = os.fdopen(handle, "wb")
            with stream:
                os.fchmod(stream.fileno(), _mode_for(path))
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
            with guard.deferred():
                os.replace(temporary, path)
                temporary = None
        except BaseException as error:
            with guard.deferred():
                if temporary is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temporary)
            if isinstance(error, OSError):
                raise BwskError(f"{path}: cannot write ({error.strerror or error})") from None
            raise


class _Terminated(BaseException):
    """A terminating signal arrived inside a `_TerminationGuard` (a BaseException, so `except Exception` lets it pass)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _TerminationGuard:
    """Within the block, a terminating signal raises `_Terminated` (deferred to the end of a `deferred()` section);
    on leaving the block, the previous handlers are restored and a signal that arrived is delivered to them again.

    Signals that are ignored, or handled outside Python, are left alone; off the main thread nothing is installed.
    """

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}
        self.deferring = False
        self.pending: int | None = None

    def __enter__(self) -> _TerminationGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in TERMINATING_SIGNALS:
                if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                    self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if isinstance(error, _Terminated):
            signal.raise_signal(error.signum)  # ends the process unless the previous handler returns
            raise BwskError(f"interrupted by {error} before the output was written") from None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.deferring:
            self.pending = signum
            return
        raise _Terminated(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A section no terminating signal interrupts: one that arrives inside is raised as it ends."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
            if self.pending is not None:
                signum, self.pending = self.pending, None
                raise _Terminated(signum)


def _mode_for(path: str) -> int:
    """The replaced file's permissions, or what a new file gets under the umask (mkstemp would give 0600)."""
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
