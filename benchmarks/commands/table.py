"""asit table [--results PATH ...] [--out DIR] [--epoch best|last]: leaderboard (Markdown, CSV, LaTeX, PNG) from
results stores, with 95 % bootstrap intervals, data fingerprints and cost; `--compare A B [--task T] [--mode M]`:
paired comparison of two encoders instead."""

from __future__ import annotations

import argparse

from upstream.errors import AsitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..stats import RESAMPLES, SEED

    parser.add_argument("--results", action="append", metavar="PATH",
                        help="results store file, or a folder of *.jsonl stores (repeatable; default: results/)")
    parser.add_argument("--out", default="leaderboard", help="output folder (default: leaderboard/)")
    parser.add_argument("--title", default="Leaderboard")
    parser.add_argument("--no-reference", action="store_true", help="leave out the paper's quoted rows")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="instead of the leaderboard: A − B per common task × mode × protocol, paired by run "
                             "(seed, fold) and test clip, with bootstrap interval and p-values; writes "
                             "OUT/compare_A_vs_B.csv and .md (A, B: encoder names as in the table, or name@sha8)")
    parser.add_argument("--task", help="with --compare: only this task (id such as esc50, or label such as ESC-50)")
    parser.add_argument("--mode", help="with --compare: only this mode (finetune, probe, hear, ...)")
    parser.add_argument("--epoch", choices=("best", "last"), default="best",
                        help="finetune cells: the test score at the best-valid epoch (where the recipe selects on a "
                             "valid split; else the last) or at the last epoch (default: best; both are stored)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help=f"bootstrap resamples for intervals and comparisons (default: {RESAMPLES})")
    parser.add_argument("--bootstrap-seed", type=int, default=SEED,
                        help=f"seed of the bootstrap's random generator (default: {SEED})")


def run(args: argparse.Namespace) -> int:
    from ..table import output_folder, write_comparison, write_leaderboard

    results = args.results or ["results"]
    output_folder(args.out)                                  # refused before reading and bootstrapping the stores
    if args.resamples < 1:
        raise AsitError(f"--resamples must be at least 1, not {args.resamples}")
    if args.compare:
        a, b = args.compare
        files = write_comparison(results, args.out, a, b, task=args.task, mode=args.mode, resamples=args.resamples,
                                 seed=args.bootstrap_seed, epoch=args.epoch)
        print(files.text)
        print(f"wrote {files.csv}, {files.markdown}")
        return 0
    if args.task or args.mode:
        raise AsitError("--task and --mode select the columns of --compare A B; the leaderboard shows them all")
    files = write_leaderboard(results, args.out, reference=not args.no_reference, title=args.title,
                              resamples=args.resamples, seed=args.bootstrap_seed, epoch=args.epoch)
    print(files.text)
    print(f"\nwrote {files.markdown}, {files.csv}, {files.long_csv}, {files.latex}, {files.png}")
    return 0
