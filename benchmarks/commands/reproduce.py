"""asit reproduce ROW [--results PATH ...] [--work-dir DIR] [--reuse-embeddings]

Re-runs one stored row's cell from its provenance in a fresh folder and compares the new number with the stored one
(exit 0: identical or within the row's 95 % interval; 1: outside it, or different with no interval). Refuses, as
an error (exit 2), when the commit, checkpoint, recipe or data no longer match the row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "re-run a stored result row from its provenance and compare the new number with the stored one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("row", metavar="ROW", help="the row's key, or its first 6+ characters (as `asit bench SUITE "
                        "--dry-run` prints them)")
    parser.add_argument("--results", action="append", metavar="PATH",
                        help="results store file, or a folder of *.jsonl stores (repeatable; default: results/)")
    parser.add_argument("--work-dir", metavar="DIR",
                        help="fresh (new or empty) folder for the re-run (default: runs/reproduce/<key>-<UTC time>)")
    parser.add_argument("--reuse-embeddings", action="store_true",
                        help="probe rows: read the shared embedding cache instead of running the encoder again")


def run(args: argparse.Namespace) -> int:
    from ..reproduce import default_work_dir, find_row, format_reproduction, reproduce

    row = find_row(args.row, args.results or ["results"])
    work_dir = Path(args.work_dir) if args.work_dir else default_work_dir(row)
    outcome = reproduce(row, work_dir, fresh_cache=not args.reuse_embeddings)
    print(format_reproduction(outcome))
    return 0 if outcome.reproduced else 1
