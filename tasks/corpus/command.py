"""`asit corpus [OUT] [--seed N] [--force]`: generate the embedded default corpus (see docs/corpus.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from upstream.errors import AsitError

from . import CORPUS_VERSION, generate_corpus, is_up_to_date, read_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", nargs="?", type=Path, default=Path("data/corpus"),
                        help="folder to generate into (default: data/corpus)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed → identical files (default 0)")
    parser.add_argument("--force", action="store_true",
                        help="regenerate even if OUT already holds a corpus of this version and seed")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads rendering clips (default: 2 × CPU cores, at most 8); does not change output")


def check_seed_and_workers(args: argparse.Namespace) -> None:
    """The generators' shared options (corpus, dev sets), refused before any work."""
    if args.seed < 0:
        raise AsitError(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        raise AsitError(f"--workers must be >= 1, got {args.workers}")


def run(args: argparse.Namespace) -> int:
    check_seed_and_workers(args)
    reused = not args.force and is_up_to_date(args.out, args.seed)
    start = time.perf_counter()
    paths = generate_corpus(args.out, args.seed, force=args.force, workers=args.workers)
    manifest = read_manifest(paths.root) or {}
    state = "already up to date" if reused else f"generated in {time.perf_counter() - start:.1f} s"
    print(f"corpus v{CORPUS_VERSION} (seed {args.seed}) at {paths.root}: {state}")
    for name, count in manifest.get("wav_files", {}).items():
        print(f"  {name:<24} {count:>4} wav  {getattr(paths, name)}")
    return 0
