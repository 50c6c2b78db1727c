"""asit table [--results PATH ...] [--out DIR]: leaderboard (Markdown, CSV, LaTeX, PNG) from results stores."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", action="append", metavar="PATH",
                        help="results store file, or a folder of *.jsonl stores (repeatable; default: results/)")
    parser.add_argument("--out", default="leaderboard", help="output folder (default: leaderboard/)")
    parser.add_argument("--title", default="Leaderboard")
    parser.add_argument("--no-reference", action="store_true", help="leave out the paper's quoted rows")


def run(args: argparse.Namespace) -> int:
    from ..table import write_leaderboard

    files = write_leaderboard(args.results or ["results"], args.out, reference=not args.no_reference,
                              title=args.title)
    print(files.text)
    print(f"\nwrote {files.markdown}, {files.csv}, {files.long_csv}, {files.latex}, {files.png}")
    return 0
