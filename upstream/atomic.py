"""Atomic file replacement: readers (and a later resume) see the old file or the new one, never half of one.

The new file gets the mode an ordinary `open(path, "w")` gives a new file (0666 less the process umask), not the
0600 of the temporary file it starts as; a replaced file's own mode is not kept. A failed write (full disk,
read-only or missing folder, the target being a folder) removes the temporary file and raises `FileWriteError`: an
`AsitError` (the CLI prints one line naming the target) that is also an `OSError` (callers catching OSError keep
working).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import AsitError

_UMASK_LOCK = threading.Lock()
_UMASK_LINE = re.compile(rb"^Umask:\s*([0-7]+)\s*$", re.MULTILINE)


class FileWriteError(AsitError, OSError):
    """A file could not be written; the message names it and says why (errno is the underlying one)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


def current_umask() -> int:
    """The process umask, read without changing it where the OS tells (Linux: /proc/self/status), else by setting
    and restoring it under a lock."""
    try:
        with open("/proc/self/status", "rb") as handle:
            match = _UMASK_LINE.search(handle.read())
        if match:
            return int(match.group(1), 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_error(path: str | Path, exc: OSError) -> FileWriteError:
    """`exc` (raised while writing `path`) as one line naming `path`."""
    if isinstance(exc, FileWriteError):
        return exc
    path = Path(path)
    blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
    if path.is_dir():
        reason = "it is a folder; give a file name"
    elif blocker is not None:
        reason = f"{blocker} is a file, not a folder"
    else:
        reason = exc.strerror or str(exc) or type(exc).__name__
    return FileWriteError(f"cannot write {path}: {reason}", exc.errno)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside `path`, renamed over `path` when the block ends without error
    (and removed when it raises). The block should only write to the handle: an OSError raised inside it is
    reported as a failure to write `path`."""
    path = Path(path)
    tmp: str | None = None
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            with suppress(OSError):          # file systems without modes (some FUSE/SMB mounts) keep theirs
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            yield handle
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp is not None and os.path.lexists(tmp):
            with suppress(OSError):          # nothing more to do if even that fails; the error above says why
                os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))


__all__ = ["FileWriteError", "atomic_write", "atomic_write_text", "current_umask", "write_error"]
