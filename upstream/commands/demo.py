"""asit demo [--out DIR] [--seed N] [key=value ...]"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import DemoContext, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out); reruns resume")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides of the demo_tiny pretraining config, e.g. trainer.max_epochs=4")


def run(args: argparse.Namespace) -> int:
    run_demo(DemoContext(out_dir=Path(args.out), seed=args.seed, pretrain_overrides=list(args.overrides)))
    return 0
