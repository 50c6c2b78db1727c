"""asit info CHECKPOINT [--json]"""

from __future__ import annotations

import argparse
import json

from ..checkpoint import describe_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint")
    parser.add_argument("--json", action="store_true", help="print JSON instead of aligned text")


def run(args: argparse.Namespace) -> int:
    info = describe_checkpoint(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key == "meta":
            value = {k: v for k, v in value.items() if k != "config"}
        print(f"{key:>12}: {value}")
    return 0
