"""asit export CHECKPOINT OUT [--which teacher|student] [--sample-rate SR]"""

from __future__ import annotations

import argparse

from ..checkpoint import load_encoder, save_encoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="Lightning pretraining checkpoint, official ASiT checkpoint, or export")
    parser.add_argument("out", help="where to write the exported encoder (.pt, weights_only-loadable)")
    parser.add_argument("--which", choices=("teacher", "student"), default="teacher",
                        help="which network of a pretraining checkpoint (default: teacher, as the paper finetunes)")
    parser.add_argument("--sample-rate", type=int, default=None,
                        help="override the sample rate the fbank is computed at (official ASiT checkpoints: 32000)")


def run(args: argparse.Namespace) -> int:
    loaded = load_encoder(args.checkpoint, which=args.which, sample_rate=args.sample_rate)
    meta = dict(loaded.meta, exported_from=str(args.checkpoint), source=loaded.source)
    path = save_encoder(args.out, loaded.encoder, loaded.frontend, meta)
    print(f"asit export: wrote {path} ({loaded.source}, {loaded.frontend.sample_rate} Hz frontend)")
    return 0
