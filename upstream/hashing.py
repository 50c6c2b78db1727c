"""Content hashes of files (task metadata, stamps, and a checkpoint file's bytes for provenance).

Caches and results identify an *encoder* by its weights + config instead (upstream.identity.encoder_identity): an
export of a run's `last.ckpt` and the run's own `encoder.pt` have different bytes but are one encoder."""

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


def file_version(path: str | Path, what: str = "") -> tuple[str, int, int, int]:
    """(resolved path, size, mtime_ns, inode): the key under which a file's derived values are memoised, so they are
    recomputed when the file changes. `what` prefixes the error's file name (e.g. "checkpoint")."""
    path = Path(path)
    name = f"{what} {path}".strip()
    try:
        stat = path.stat()
    except OSError:
        raise AsitError(f"{name} does not exist") from None
    if not path.is_file():
        raise AsitError(f"{name} is not a file")
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content, memoised per (path, size, mtime, inode): a 1 GB checkpoint is hashed once per
    process however many cells use it, and re-hashed when the file changes."""
    return _sha256_of(*file_version(path))


__all__ = ["file_sha256", "file_version"]
