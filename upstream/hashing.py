"""Content hashes of files (checkpoints, task metadata): the identity results, caches and stamps are keyed by."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from .errors import AsitError


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content, memoised per (path, size, mtime, inode): a 1 GB checkpoint is hashed once per
    process however many cells use it, and re-hashed when the file changes."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise AsitError(f"{path} does not exist") from None
    if not path.is_file():
        raise AsitError(f"{path} is not a file")
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


__all__ = ["file_sha256"]
