"""Data fingerprints: a short digest of exactly which clips (names, sizes, audio bytes, labels, splits) a run saw.

Results carry it so a table can flag a column whose rows saw different data and a reproduction can refuse when the
data changed. Hashing every audio byte of a dataset is costly, so content hashes are cached per dataset root in
`<cache dir>/fingerprints/<sha256 of the resolved root>[:16].json` as `{resolved path: [size, mtime_ns, sha256]}`: a
second fingerprint of an unchanged dataset stats every file and reads no audio; a file whose size or modification
time changed is hashed again (so a `touch` costs one re-hash and leaves the digest as it was). As in git's index, a
file modified within `RACY_NS` of being hashed is not trusted from the cache next time (a write in the same
timestamp tick would not change its mtime), so it is hashed again until it is older than that.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .atomic import FileWriteError, atomic_write_text
from .errors import AsitError
from .hashing import file_sha256

FINGERPRINT_VERSION = 1
RACY_NS = 2_000_000_000        # 2 s: coarser than any file system's mtime tick (FAT's is 2 s)
_SHA256_HEX = frozenset("0123456789abcdef")

__all__ = ["ContentHashCache", "FingerprintEntry", "RACY_NS", "default_cache_dir", "describe", "fingerprint_entries"]


def default_cache_dir() -> Path:
    """`$ASIT_CACHE_DIR`, else `$XDG_CACHE_HOME/asit-hear`, else `~/.cache/asit-hear`."""
    base = os.environ.get("ASIT_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "asit-hear"


def _valid_record(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3 and all(type(v) is int and v >= 0 for v in value[:2])
            and isinstance(value[2], str) and len(value[2]) == 64 and set(value[2]) <= _SHA256_HEX)


def _read_records(path: Path) -> dict[str, list[Any]]:
    """The well-formed records of a cache file; a missing, unreadable or corrupt file (or record) counts as absent."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if isinstance(key, str) and _valid_record(value)}


class ContentHashCache:
    """SHA-256 of audio files keyed by (resolved path, size, mtime_ns), kept in one JSON file per dataset root.

    `hashed` counts the files not served by the cache file since it was opened (tests and telemetry): their bytes
    were read, unless upstream.hashing's in-process memo already held the same file version. `save` writes the
    file atomically, once per fingerprint, and only when something was added."""

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None) -> None:
        resolved = str(Path(root).resolve())
        name = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:16]
        self.path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "fingerprints" / \
            f"{name}.json"
        self.records = _read_records(self.path)
        self.fresh: dict[str, list[Any]] = {}      # records to write: hashed now, old enough to be trusted later
        self.hashed = 0

    def sha256(self, path: str | Path) -> str:
        """The file's content SHA-256, from the cache when its size and mtime are the cached ones."""
        return self.size_and_sha256(path)[1]

    def size_and_sha256(self, path: str | Path) -> tuple[int, str]:
        """The file's size and content SHA-256 from one stat (`sha256`, with the size the digest listing needs)."""
        path = Path(path)
        now = time.time_ns()
        try:
            stat = path.stat()                     # before reading: a change while hashing shows up next time
        except OSError:
            raise AsitError(f"cannot fingerprint audio file {path}: it does not exist or cannot be read") from None
        key = str(path.resolve())
        record = self.records.get(key)
        if record is not None and record[0] == stat.st_size and record[1] == stat.st_mtime_ns:
            return stat.st_size, record[2]
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise AsitError(f"cannot fingerprint audio file {path}: {exc.strerror or exc}") from None
        self.hashed += 1
        record = [stat.st_size, stat.st_mtime_ns, digest]
        self.records[key] = record
        if stat.st_mtime_ns < now - RACY_NS:
            self.fresh[key] = record
        return stat.st_size, digest

    def save(self) -> None:
        """Merge this run's records into the file on disk (another process may have added some) and replace it
        atomically. A cache that cannot be written only costs a re-hash next time: a warning, not an error."""
        if not self.fresh:
            return
        merged = {**_read_records(self.path), **self.fresh}
        try:
            atomic_write_text(self.path, json.dumps(merged, sort_keys=True, separators=(",", ":")))
        except FileWriteError as exc:
            print(f"warning: data fingerprint cache not saved ({exc}); audio is hashed again next time",
                  file=sys.stderr, flush=True)
            return
        self.fresh = {}


@dataclass(frozen=True)
class FingerprintEntry:
    """One listed clip: its file and the fields that decide how it is used (labels, split, fold, segment, ...).

    `fields` are (name, value) pairs with JSON-able values; build entries with `FingerprintEntry.of`."""

    path: Path
    fields: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, path: str | Path, **fields: Any) -> "FingerprintEntry":
        return cls(Path(path), tuple(sorted(fields.items())))


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root`, posix-style (`..` for files outside it), so a moved dataset keeps its digest."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def fingerprint_entries(entries: Iterable[FingerprintEntry], root: Path, *, content: bool,
                        cache_dir: Path | None = None, cache: ContentHashCache | None = None) -> str:
    """16-hex digest of a canonical, sorted listing: per entry its path relative to `root`, size, content SHA-256
    (when `content`; cached per root under `cache_dir`, default `default_cache_dir()`) and fields. Order of the
    entries does not matter; their multiplicity does. `cache`: an open cache to use (its `hashed` counts reads)."""
    root = Path(root)
    if content and cache is None:
        cache = ContentHashCache(root, cache_dir)
    files: dict[Path, list[Any]] = {}        # path -> [size] or [size, sha256]: one stat per file (segments share)
    lines = []
    for entry in entries:
        file = files.get(entry.path)
        if file is None:
            if content:
                assert cache is not None
                file = files[entry.path] = list(cache.size_and_sha256(entry.path))
            else:
                try:
                    file = files[entry.path] = [entry.path.stat().st_size]
                except OSError:
                    raise AsitError(f"cannot fingerprint audio file {entry.path}: it does not exist or cannot be "
                                    f"read") from None
        row: list[Any] = [_relative(entry.path, root), *file, dict(entry.fields)]
        lines.append(json.dumps(row, sort_keys=True, separators=(",", ":"), default=str))
    if cache is not None:
        cache.save()
    lines.sort()
    header = json.dumps({"version": FINGERPRINT_VERSION, "content": bool(content)}, sort_keys=True)
    digest = hashlib.sha256(header.encode("utf-8"))
    for line in lines:
        digest.update(b"\n" + line.encode("utf-8"))
    return digest.hexdigest()[:16]


def describe(content: bool) -> str:
    """What a digest covers, in the words results and model cards record."""
    return "sha256 of audio bytes" if content else "names and sizes only"

