"""Deterministic randomness and parallel clip writing shared by all layout generators.

Layout modules first *plan* their clips in the main thread (names, labels, splits — all metadata is known before any
audio exists), then hand each clip's render function to a `ClipWriter`. A render function draws its randomness from
`rng_for(seed, *key)`, never from a shared generator, so thread scheduling cannot change a single sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import soundfile as sf

from upstream.errors import AsitError


def rng_for(seed: int, *key: object) -> np.random.Generator:
    """An independent generator per (seed, key): e.g. `rng_for(0, "esc50", "103942", "A")`."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(str(k) for k in key)).encode("utf-8")).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype="<u4").astype(np.uint64))


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Round and clip to int16 ourselves: libsndfile's float→int conversion does not clip by default."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM wav, the format of every clip in the corpus (and of the real datasets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), to_pcm16(audio), sample_rate, subtype="PCM_16", format="WAV")


def default_workers() -> int:
    """Subprocess-bound work: a few threads per core keep espeak-ng/sox busy without oversubscribing numpy."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


class ClipWriter:
    """Renders and writes clips on a small thread pool; `close()` waits and re-raises the first failure."""

    def __init__(self, workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="corpus")
        self._futures: list[Future[None]] = []

    def submit(self, path: Path, sample_rate: int, render: Callable[[], np.ndarray],
               length: int | None = None) -> None:
        """Queue one clip. `length` (samples), when given, is checked: layouts promise exact durations."""
        self._futures.append(self._pool.submit(self._write, path, sample_rate, render, length))

    @staticmethod
    def _write(path: Path, sample_rate: int, render: Callable[[], np.ndarray], length: int | None) -> None:
        audio = render()
        if audio.ndim != 1:
            raise ValueError(f"{path}: rendered audio must be mono 1-D, got shape {audio.shape}")
        if length is not None and len(audio) != length:
            raise ValueError(f"{path}: rendered {len(audio)} samples, the layout needs {length}")
        write_wav(path, audio, sample_rate)

    def close(self) -> int:
        """Wait for every clip; returns how many were written."""
        try:
            for future in self._futures:
                future.result()
        finally:
            for future in self._futures:
                future.cancel()
            self._pool.shutdown(wait=True)
        return len(self._futures)

    def __enter__(self) -> "ClipWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: drop queued clips, keep the original error
            for future in self._futures:
                future.cancel()
            self._pool.shutdown(wait=True)


@contextmanager
def staged(out_dir: Path, what: str) -> Iterator[Path]:
    """A fresh staging folder beside `out_dir` to build `what` (e.g. "the corpus") into: swapped into place when the
    block ends without error, removed when it raises (kill -9 leaves only a hidden `.partial-*` folder)."""
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise AsitError(f"cannot create {what} next to {out_dir}: {exc.strerror or exc}") from exc
    try:
        yield staging
        swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_into_place(staging: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the finished `staging` folder with renames, so a reader never sees a half-written set."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    retired = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    out_dir.rename(retired)
    staging.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)


def tree_hash(root: Path, skip: str) -> str:
    """SHA-256 over (relative path, file SHA-256) of every file but the manifest `skip`: equal hashes ⇔ equal trees."""
    total = hashlib.sha256()
    root = Path(root)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file() and p.name != skip}
    for rel in sorted(files):
        total.update(rel.encode("utf-8") + b"\0")
        total.update(hashlib.sha256(files[rel].read_bytes()).digest())
    return total.hexdigest()


def read_json_manifest(path: Path) -> dict[str, Any] | None:
    """A generated set's manifest (corpus.json, devsets.json) as a dict, or None when absent or unreadable."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None
