"""asit export CHECKPOINT OUT [--which teacher|student] [--sample-rate SR] [--init pretrained|scratch|fbank_stats]
[--seed N]"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import load_encoder, save_encoder
from ..cli import positive_int
from ..errors import AsitError
from ..floors import INITS, initialised


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="Lightning pretraining checkpoint, official ASiT checkpoint, or export")
    parser.add_argument("out", help="where to write the exported encoder (.pt, weights_only-loadable)")
    parser.add_argument("--which", choices=("teacher", "student"), default="teacher",
                        help="which network of a pretraining checkpoint (default: teacher, as the paper finetunes)")
    parser.add_argument("--sample-rate", type=positive_int, default=None, metavar="HZ",
                        help="override the sample rate the fbank is computed at (official ASiT checkpoints: 32000)")
    parser.add_argument("--init", choices=INITS, default="pretrained",
                        help="export the checkpoint's floor instead: `scratch` (same architecture and frontend, "
                             "random weights from --seed) or `fbank_stats` (same frontend, no weights), e.g. for "
                             "heareval's random-init row")
    parser.add_argument("--scratch", dest="init", action="store_const", const="scratch",
                        help="shorthand for --init scratch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --init scratch weights (default 0)")


def run(args: argparse.Namespace) -> int:
    if Path(args.out).is_dir():      # before the (slow) load; atomic_write refuses it too, later
        raise AsitError(f"OUT {args.out} is a folder; give the file to write, e.g. {Path(args.out) / 'encoder.pt'}")
    loaded = load_encoder(args.checkpoint, which=args.which, sample_rate=args.sample_rate)
    encoder = initialised(loaded.encoder, args.init, args.seed)
    meta = dict(loaded.meta, exported_from=str(args.checkpoint), source=loaded.source, init=args.init)
    if args.init == "scratch":
        meta["init_seed"] = args.seed
    path = save_encoder(args.out, encoder, loaded.frontend, meta)
    floor = "" if args.init == "pretrained" else f", floor: {args.init}"
    print(f"asit export: wrote {path} ({loaded.source}{floor}, {loaded.frontend.sample_rate} Hz frontend)")
    return 0
