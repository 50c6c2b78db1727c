"""Real-audio development sets in the benchmarks' own layouts, rebuilt from Debian packages (docs/devsets.md).

`build_devsets(out)` writes::

    out/ESC-50-master/            audio/{fold}-{src}-{take}-{target}.wav + meta/esc50.csv (recorded sound effects)
    out/VoxCeleb1/                wav/idXXXXX/<video>/<utt>.wav + iden_split.txt (recorded speakers)
    out/speech_commands_v0.02/    <word>/<speaker>_nohash_<n>.wav, split lists, _background_noise_/ (TTS + ambience)
    out/devsets.json              seed, catalog hash, package and tool versions, counts, content hash (written last)

Same seed, same catalog, same package and tool versions → byte-identical files (every clip draws from its own
`rng_for(seed, …)` generator; thread scheduling cannot change a sample). The build goes to a hidden sibling folder
that is renamed into place at the end, as the corpus does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import soundfile as sf

from tasks.corpus.writer import ClipWriter, read_json_manifest, staged, tree_hash
from upstream.errors import AsitError

from . import esc, speechcommands, voxceleb
from .catalog import DEFAULT_CATALOG, Catalog, load_catalog
from .sources import decoders_needed, default_sources_dir, locate_packages, require_tools, tool_versions
from .tts import ENGINE_TOOLS, check_voice

DEVSETS_VERSION = 1
MANIFEST = "devsets.json"
DATASETS: dict[str, str] = {"esc50": esc.DATASET_DIR, "voxceleb1": voxceleb.DATASET_DIR,
                            "speechcommands_v2": speechcommands.DATASET_DIR}
# system packages whose versions can change a sample (recorded in the manifest)
ENGINE_PACKAGES: dict[str, tuple[str, ...]] = {"espeak-ng": ("espeak-ng", "espeak-ng-data"),
                                               "flite": ("flite", "libflite1"), "festival": ("festival",)}
BASE_TOOLS: tuple[str, ...] = ("espeak-ng", "sox")


@dataclass(frozen=True)
class DevsetPaths:
    """Root folder of each set (what the task readers take as their dataset path)."""

    root: Path
    esc50: Path
    voxceleb1: Path
    speechcommands_v2: Path


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    return read_json_manifest(Path(out_dir) / MANIFEST)


def catalog_sha256(catalog: Catalog) -> str:
    return hashlib.sha256(catalog.source.read_bytes()).hexdigest()


def is_up_to_date(out_dir: Path, seed: int, catalog: Catalog) -> bool:
    """True when `out_dir` holds complete sets of this version, seed and catalog."""
    manifest = read_manifest(out_dir)
    return (manifest is not None and manifest.get("devsets_version") == DEVSETS_VERSION
            and manifest.get("seed") == seed and manifest.get("catalog_sha256") == catalog_sha256(catalog)
            and all((Path(out_dir) / rel).is_dir() for rel in DATASETS.values()))


def _paths(out_dir: Path) -> DevsetPaths:
    return DevsetPaths(out_dir, **{name: out_dir / rel for name, rel in DATASETS.items()})


def build_devsets(out_dir: Path, seed: int = 0, *, sources: Path | None = None, catalog: Path | None = None,
                  force: bool = False, download: bool = True, use_system: bool = True,
                  workers: int | None = None) -> DevsetPaths:
    """Build the three sets into `out_dir` (or return at once if identical ones are there, unless `force`).

    `sources`: the package cache (default `~/.cache/asit-hear/debian-sources`); `download=False` never calls
    apt-get (a missing package is then an error naming it); `use_system=False` ignores installed packages (tests).
    An existing `out_dir` is replaced only if it is empty or holds a devsets.json.
    """
    out_dir = Path(out_dir).absolute()
    if seed < 0:
        raise AsitError(f"seed must be a non-negative integer, got {seed}")
    cat = load_catalog(catalog or DEFAULT_CATALOG)
    if out_dir.exists() and not out_dir.is_dir():
        raise AsitError(f"dev-set folder {out_dir} exists and is not a folder")
    if not force and is_up_to_date(out_dir, seed, cat):
        return _paths(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise AsitError(f"dev-set folder {out_dir} is not empty and holds no {MANIFEST}: refusing to replace it; "
                        "choose another folder")
    require_tools(BASE_TOOLS + tuple(t for e in cat.engines() for t in ENGINE_TOOLS[e]))
    for spec in cat.speechcommands.voices:
        if spec.engine != "espeak-ng" and spec.voice:
            check_voice(spec.engine, spec.voice, spec.package)
    packages = locate_packages(cat.packages(), Path(sources) if sources else default_sources_dir(), download,
                               use_system)
    files = [p for s in cat.voxceleb1.speakers for name, pats in s.files.patterns.items()
             for p in packages[name].glob(pats, s.files.exclude)]
    require_tools(decoders_needed(files))

    with staged(out_dir, "the dev sets") as staging:
        summaries: dict[str, dict[str, Any]] = {}
        finish: list[Callable[[], None]] = []
        with ClipWriter(workers) as writer:
            for name, result in (("esc50", esc.generate(staging, seed, cat.esc50, packages, writer)),
                                 ("voxceleb1", voxceleb.generate(staging, seed, cat.voxceleb1, packages, writer,
                                                                 workers)),
                                 ("speechcommands_v2", speechcommands.generate(staging, seed, cat.speechcommands,
                                                                               packages, writer))):
                if "finish" in result:
                    finish.append(result.pop("finish"))  # type: ignore[arg-type]
                result.pop("root")
                summaries[name] = result
        for step in finish:
            step()
        _write_manifest(staging, seed, cat, packages, summaries)
    return _paths(out_dir)


def _write_manifest(root: Path, seed: int, cat: Catalog, packages: dict[str, Any],
                    summaries: dict[str, dict[str, Any]]) -> None:
    tools = {"sox", "ffmpeg"} | {p for e in cat.engines() for p in ENGINE_PACKAGES.get(e, ())}
    tools |= {v.package for v in cat.speechcommands.voices if v.package}
    datasets: dict[str, Any] = {}
    for name, rel in DATASETS.items():
        wavs = sorted((root / rel).rglob("*.wav"))
        datasets[name] = {"root": rel, "files": sum(1 for p in (root / rel).rglob("*") if p.is_file()),
                          "wav_files": len(wavs), "bytes": sum(p.stat().st_size for p in (root / rel).rglob("*")
                                                                if p.is_file()),
                          "seconds": round(sum(sf.info(str(p)).duration for p in wavs), 2), **summaries[name]}
    manifest = {
        "devsets_version": DEVSETS_VERSION,
        "seed": seed,
        "catalog": str(cat.source),
        "catalog_sha256": catalog_sha256(cat),
        "packages": {name: p.version for name, p in sorted(packages.items())},
        "package_origins": {name: p.origin for name, p in sorted(packages.items())},
        "tools": tool_versions(tools),
        "datasets": datasets,
        "content_sha256": content_hash(root),
    }
    manifest["total_files"] = sum(d["files"] for d in datasets.values())
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def content_hash(root: Path) -> str:
    """SHA-256 over (relative path, file SHA-256) of every file except devsets.json: equal hashes ⇔ equal sets."""
    return tree_hash(root, MANIFEST)


__all__ = ["DATASETS", "DEVSETS_VERSION", "DevsetPaths", "MANIFEST", "build_devsets", "content_hash",
           "is_up_to_date", "load_catalog", "read_manifest"]
