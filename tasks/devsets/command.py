"""`asit devsets [OUT] [--seed N] [--sources DIR] [--force]`: build the real-audio dev sets (docs/devsets.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tasks.corpus.command import check_seed_and_workers

from . import build_devsets, is_up_to_date, load_catalog, read_manifest
from .sources import default_sources_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", nargs="?", type=Path, default=Path("data/devsets"),
                        help="folder to build into (default: data/devsets)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed → identical files (default 0)")
    parser.add_argument("--sources", type=Path, default=None,
                        help=f"cache of extracted Debian packages (default: {default_sources_dir()})")
    parser.add_argument("--offline", action="store_true",
                        help="never call apt-get download: use only --sources and installed packages")
    parser.add_argument("--catalog", type=Path, default=None,
                        help="another catalog file (default: tasks/devsets/catalog.yaml)")
    parser.add_argument("--force", action="store_true", help="rebuild even if OUT already holds these sets")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads rendering clips (default: 2 × CPU cores, at most 8); does not change output")


def run(args: argparse.Namespace) -> int:
    check_seed_and_workers(args)
    reused = not args.force and is_up_to_date(args.out, args.seed, load_catalog(args.catalog))
    start = time.perf_counter()
    paths = build_devsets(args.out, args.seed, sources=args.sources, catalog=args.catalog, force=args.force,
                          download=not args.offline, workers=args.workers)
    manifest = read_manifest(paths.root) or {}
    state = "already up to date" if reused else f"built in {time.perf_counter() - start:.1f} s"
    print(f"dev sets (seed {args.seed}) at {paths.root}: {state}")
    for line in summary_lines(manifest):
        print(f"  {line}")
    return 0


def summary_lines(manifest: dict) -> list[str]:
    """One line per set: clips, what they are, total audio and size."""
    lines = []
    for name, info in manifest.get("datasets", {}).items():
        what = ""
        if name == "esc50":
            what = f"{len(info['classes'])} classes from {info['sources']} recordings: {', '.join(info['classes'])}"
        elif name == "voxceleb1":
            what = f"{len(info['speakers'])} speakers"
        elif name == "speechcommands_v2":
            splits = "/".join(str(info["speakers"].get(k, 0)) for k in ("training", "validation", "testing"))
            what = (f"{len(info['words'])} words, {sum(info['speakers'].values())} speakers (train/valid/test "
                    f"{splits}): {' '.join(info['words'])}")
        lines.append(f"{name:<18} {info['wav_files']:>5} wav  {info['seconds'] / 60:6.1f} min  "
                     f"{info['bytes'] / 1e6:6.1f} MB  {what}")
    packages = manifest.get("packages", {})
    lines.append(f"{len(packages)} Debian packages: {', '.join(f'{k} {v}' for k, v in packages.items())}")
    lines.append(f"content SHA-256 {manifest.get('content_sha256', '?')}")
    return lines
