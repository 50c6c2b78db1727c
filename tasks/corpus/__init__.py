"""The embedded default corpus: small, generated, deterministic data in the real on-disk layouts of the benchmarks.

`generate_corpus(out)` writes (see docs/corpus.md)::

    out/unlabeled/                          pretraining clips (speech + sound scenes)
    out/ESC-50-master/                      audio/*.wav + meta/esc50.csv
    out/speech_commands_v0.02/              word folders, validation/testing lists, _background_noise_/
    out/speech_commands_v0.01/              the same for v0.01 (SUPERB KS)
    out/speech_commands_test_set_v0.01/     SUPERB's separate KS test set (10 words, _silence_, _unknown_)
    out/VoxCeleb1/                          wav/idXXXXX/<video>/<utt>.wav + iden_split.txt
    out/audioset/                           metadata/*.csv + audios/<csv stem>/Y{YTID}.wav (PANNs' layout)
    out/corpus.json                         version, seed, file counts, roots, content hash (written last)

To add a dataset: write a module with `generate(out_dir, seed, writer) -> {field: root}`, append it
to GENERATORS, add the field(s) to CorpusPaths and bump CORPUS_VERSION.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from upstream.errors import AsitError

from . import audioset, esc50, speechcommands, synth, unlabeled, voxceleb1
from .writer import ClipWriter, read_json_manifest, staged, tree_hash

CORPUS_VERSION = 2
MANIFEST = "corpus.json"

Generator = Callable[[Path, int, ClipWriter], dict[str, Path]]
GENERATORS: tuple[Generator, ...] = (
    unlabeled.generate,
    esc50.generate,
    speechcommands.generate_v2,
    speechcommands.generate_v1,
    voxceleb1.generate,
    audioset.generate,
)


@dataclass(frozen=True)
class CorpusPaths:
    """Root folder of each generated dataset (what the task readers take as their dataset path)."""

    root: Path
    unlabeled: Path
    esc50: Path
    speechcommands_v2: Path
    speechcommands_v1: Path
    speechcommands_v1_test: Path
    voxceleb1: Path
    audioset: Path

    @classmethod
    def from_relative(cls, root: Path, datasets: dict[str, str]) -> "CorpusPaths":
        return cls(root=root, **{name: root / rel for name, rel in datasets.items()})


DATASET_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CorpusPaths) if f.name != "root")


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The parsed corpus.json of `out_dir`, or None when there is none (or it is unreadable)."""
    return read_json_manifest(Path(out_dir) / MANIFEST)


def is_up_to_date(out_dir: Path, seed: int = 0) -> bool:
    """True when `out_dir` holds a complete corpus of this version and seed (generate_corpus would return at once)."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("corpus_version") != CORPUS_VERSION or manifest.get("seed") != seed:
        return False
    datasets = manifest.get("datasets")
    return (isinstance(datasets, dict) and set(datasets) == set(DATASET_FIELDS)
            and all((Path(out_dir) / rel).is_dir() for rel in datasets.values()))


def generate_corpus(out_dir: Path, seed: int = 0, *, force: bool = False, workers: int | None = None) -> CorpusPaths:
    """Generate the corpus into `out_dir` (or return at once if an identical one is there, unless `force`).

    Same seed → byte-identical files, whatever `workers` is. The corpus is built in a hidden sibling folder and
    renamed into place at the end, so an interrupted run never leaves a corpus that looks complete. An existing
    `out_dir` is replaced only if it is empty or holds a corpus (a corpus.json); anything else is refused.
    """
    out_dir = Path(out_dir).absolute()
    if seed < 0:
        raise AsitError(f"seed must be a non-negative integer, got {seed}")
    if out_dir.exists() and not out_dir.is_dir():
        raise AsitError(f"corpus folder {out_dir} exists and is not a folder")
    if not force and is_up_to_date(out_dir, seed):
        return _paths(out_dir, read_manifest(out_dir) or {})
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise AsitError(f"corpus folder {out_dir} is not empty and holds no {MANIFEST}: refusing to replace it; "
                        "choose another folder")
    synth.require_tools()

    with staged(out_dir, "the corpus") as staging:
        manifest = _build(staging, seed, workers)
    return _paths(out_dir, manifest)


def _build(staging: Path, seed: int, workers: int | None) -> dict[str, Any]:
    """Run every generator into `staging`, then write corpus.json (last: its presence means complete)."""
    roots: dict[str, Path] = {}
    with ClipWriter(workers) as writer:
        for generate in GENERATORS:
            produced = generate(staging, seed, writer)
            clash = set(produced) & set(roots)
            if clash:
                raise RuntimeError(f"two generators claim dataset(s) {sorted(clash)}")
            roots.update(produced)
    if set(roots) != set(DATASET_FIELDS):
        raise RuntimeError(f"generators produced {sorted(roots)}, CorpusPaths expects {sorted(DATASET_FIELDS)}")
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "seed": seed,
        "datasets": {name: roots[name].relative_to(staging).as_posix() for name in DATASET_FIELDS},
        "files": {name: _count_files(roots[name]) for name in DATASET_FIELDS},
        "wav_files": {name: _count_files(roots[name], "*.wav") for name in DATASET_FIELDS},
        "content_sha256": content_hash(staging),
    }
    manifest["total_files"] = sum(manifest["files"].values())
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _count_files(root: Path, pattern: str = "*") -> int:
    return sum(1 for p in root.rglob(pattern) if p.is_file())


def content_hash(root: Path) -> str:
    """SHA-256 over (relative path, file SHA-256) of every file except corpus.json: equal hashes ⇔ equal sets."""
    return tree_hash(root, MANIFEST)


def _paths(out_dir: Path, manifest: dict[str, Any]) -> CorpusPaths:
    return CorpusPaths.from_relative(out_dir, manifest["datasets"])


__all__ = ["CORPUS_VERSION", "CorpusPaths", "GENERATORS", "content_hash", "generate_corpus", "is_up_to_date",
           "read_manifest"]
