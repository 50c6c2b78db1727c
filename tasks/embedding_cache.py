"""On-disk cache of frozen-encoder embeddings, so a second probe on the same checkpoint runs no encoder forward.

An entry is keyed by the SHA-256 of everything that determines the embeddings. Our encoders: the encoder's identity
(component `checkpoint_sha256`, the historical name: since cache version 2 the weights + config identity of
upstream.identity.encoder_identity, not the file's bytes, so an export of a run's `last.ckpt` and the run's own
`encoder.pt` share entries), plus init and seed for re-initialised "scratch" encoders, the frontend configuration and
the runtime options (layer, pooling, chunk length, precision). A HEAR 2021 module: under the same component,
tasks.api.hear_module_identity (the module name, the model file's bytes, the options), plus the module's version,
options and sample rate. Both: the task, the part (split or fold) and a digest of its example list (path, segment, file
size and modification time, so regenerated audio is never served stale). Entries are `.npz` files written atomically
(temporary file + rename) with a JSON sidecar saying what the key was made of. Only finite embeddings are stored (the
probe refuses others); an entry holding NaN or Inf (written by an older version) is treated as absent and recomputed.

Location: `cache_dir` of the probe recipe, else `$ASIT_CACHE_DIR/embeddings`, else `~/.cache/asit-hear/embeddings`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from upstream.atomic import atomic_write

from .datasets import Example

CACHE_VERSION = 2          # 2: the encoder is keyed by its weights + config identity


def default_cache_dir() -> Path:
    base = os.environ.get("ASIT_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "asit-hear") / "embeddings"


def examples_digest(examples: Sequence[Example]) -> str:
    """Order-sensitive digest of an example list: path, segment, size and mtime of every file."""
    digest = hashlib.sha256()
    for example in examples:
        stat = example.path.stat()
        digest.update(json.dumps([str(example.path.resolve()), example.start_s, example.duration_s, stat.st_size,
                                  stat.st_mtime_ns]).encode())
    return digest.hexdigest()


def cache_key(components: dict[str, Any]) -> str:
    canonical = json.dumps({"cache_version": CACHE_VERSION, **components}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class EmbeddingCache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str, rows: int) -> np.ndarray | None:
        """The cached [rows, D] array, or None (absent, unreadable, of another length or not finite: recomputed)."""
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with np.load(path) as data:
                embeddings = data["embeddings"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            embeddings = None
        if (embeddings is None or embeddings.ndim != 2 or embeddings.shape[0] != rows
                or not bool(np.isfinite(embeddings).all())):
            self.misses += 1
            return None
        self.hits += 1
        return embeddings

    def store(self, key: str, embeddings: np.ndarray, components: dict[str, Any]) -> Path:
        path = self.path(key)
        with atomic_write(path) as handle:
            np.savez(handle, embeddings=np.asarray(embeddings, dtype=np.float32))
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps({"key": key, "cache_version": CACHE_VERSION, **components}, indent=2,
                                      default=str) + "\n")
        return path
