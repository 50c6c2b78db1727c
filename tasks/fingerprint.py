"""The data fingerprint of a task's examples, recorded in every result row (`extra["data_fingerprint"]`).

It names what a number was measured on: clips per role, distinct audio files, clips the reader dropped, and a digest
over every example's file (relative path, size, SHA-256 of its bytes) with its labels, split, fold, group and
segment. The digest uses each example's own split/fold, never its role, so the five ESC-50 cells of one dataset
(whose roles differ by held-out fold) share one digest; the role counts are in `clips`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upstream.fingerprint import FingerprintEntry, describe, fingerprint_entries

from .datasets import Example
from .task_data import TaskData

ROLES = ("train", "valid", "test")


def example_entry(example: Example) -> FingerprintEntry:
    """An example as a fingerprint entry: what decides how it is used besides its bytes."""
    return FingerprintEntry.of(example.path, labels=list(example.labels), split=example.split, fold=example.fold,
                               group=example.group, start_s=example.start_s, duration_s=example.duration_s)


def dropped_clips(report: dict[str, Any]) -> int:
    """Listed clips a reader left out as missing or holding no samples (AudioSet with `missing: drop`); readers that
    refuse such clips record nothing, so 0."""
    total = 0
    for key in ("missing", "empty"):
        counts = report.get(key)
        if isinstance(counts, dict):
            total += sum(int(n) for n in counts.values())
    return total


def used_examples(data: TaskData) -> list[Example]:
    """Every example of every part some role uses, each part once (ESC-50: all five folds, whichever is held out)."""
    used = [part for role in ROLES for part in data.roles.get(role, [])]
    return [e for part in dict.fromkeys(used) for e in data.parts[part]]


def task_entries(data: TaskData) -> list[FingerprintEntry]:
    """The entries `data_fingerprint` digests (for callers that bring their own `ContentHashCache`)."""
    return [example_entry(e) for e in used_examples(data)]


def data_fingerprint(data: TaskData, cache_dir: Path | None = None) -> dict[str, Any]:
    """JSON-able fingerprint of the examples `data` uses: `digest` (16 hex), `clips` per role present, `files`
    (distinct audio files), `missing` (listed clips dropped by the reader), `root` and what `content` covers.
    Reads every audio file once per dataset root; later calls read none (see upstream.fingerprint)."""
    examples = used_examples(data)
    digest = fingerprint_entries((example_entry(e) for e in examples), data.index.root, content=True,
                                 cache_dir=cache_dir)
    return {"digest": digest,
            "clips": {role: len(data.examples(role)) for role in ROLES if data.roles.get(role)},
            "files": len({e.path for e in examples}),
            "missing": dropped_clips(data.index.report),
            "root": str(data.index.root),
            "content": describe(True)}


__all__ = ["data_fingerprint", "dropped_clips", "example_entry", "task_entries", "used_examples"]
