"""Identity of an encoder by what it computes, not by its file's bytes.

`asit export` of a run's `last.ckpt` and the run's own `encoder.pt` hold the same weights in different containers
(a Lightning checkpoint with optimizer state and heads, an export with other metadata), so their file hashes differ
while every embedding they give is the same. `encoder_identity` is the SHA-256 of what determines those embeddings:
the loaded encoder's `arch`, its config (`dataclasses.asdict`), the frontend config the file asks for, and every
state-dict tensor (name, dtype, shape, bytes of the contiguous CPU tensor) in sorted key order. Two files with the
same identity give the same encoder; changing one weight, the config or the frontend statistics changes it.
The container does not count either: a `.pt` and a `.safetensors` export of one encoder (`asit export --format`)
have the same identity.

The embedding cache (tasks/embedding_cache.py) and the results store (benchmarks/results.py: `cell_key`, the
`checkpoint_sha256` field of rows) are keyed by it. Floors built from a file (init `scratch` / `fbank_stats`) are not
described by it alone: their keys add the init and, for `scratch`, the seed.

Loading a checkpoint costs seconds for a ViT-B, so the identity is memoised per (resolved path, size, mtime, inode,
network), like `upstream.hashing.file_sha256`: once per process however many cells use the file, and recomputed when
the file changes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .hashing import file_version

IDENTITY_VERSION = 1


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor (any dtype, bf16 included) as a contiguous CPU buffer."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def encoder_digest(encoder: Any, frontend: Any) -> str:
    """SHA-256 of an in-memory encoder + frontend config: arch, configs, and every tensor of the state dict."""
    digest = hashlib.sha256()
    header = {"identity_version": IDENTITY_VERSION, "arch": encoder.arch,
              "encoder": dataclasses.asdict(encoder.config), "frontend": dataclasses.asdict(frontend)}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode("utf-8"))
    state = encoder.state_dict()
    for name in sorted(state):
        tensor = state[name]
        digest.update(b"\0" + json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode("utf-8") + b"\0")
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _identity_of(path: str, size: int, mtime_ns: int, inode: int, which: str) -> str:
    from .checkpoint import load_encoder   # torch-heavy model registry: only when an identity is needed
    loaded = load_encoder(path, which=which)
    return encoder_digest(loaded.encoder, loaded.frontend)


def encoder_identity(path: str | Path, which: str = "teacher") -> str:
    """The weights + config identity (64 hex digits) of the encoder `upstream.checkpoint.load_encoder(path, which)`
    loads, with the frontend the file itself asks for. Raises AsitError naming the file when it cannot be loaded."""
    return _identity_of(*file_version(path, "checkpoint"), which)


__all__ = ["IDENTITY_VERSION", "encoder_digest", "encoder_identity"]
