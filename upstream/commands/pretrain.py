"""asit pretrain CONFIG [key=value ...] [--resume auto|PATH | --overwrite]"""

from __future__ import annotations

import argparse

from ..pretrain import load_pretrain_config, run_pretraining


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a shipped config name (asit_base, asit_small, demo_tiny) or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. data.source=/data/audioset trainer.devices=4")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", default=None,
                       help="'auto' (the run directory's checkpoints/last.ckpt if present) or a checkpoint path")
    start.add_argument("--overwrite", action="store_true",
                       help="the run directory holds an earlier run: delete its checkpoints, encoder.pt, config "
                            "and logs and train from scratch (without it, such a directory is refused)")


def run(args: argparse.Namespace) -> int:
    config = load_pretrain_config(args.config, args.overrides)
    run_dir = run_pretraining(config, resume=args.resume, report=True, overwrite=args.overwrite)
    print(f"asit pretrain: run directory {run_dir}, encoder {run_dir / 'encoder.pt'} (`asit info {run_dir}` shows "
          "this summary again)")
    return 0
