"""asit info CHECKPOINT|RUN_DIR [--json]"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..checkpoint import describe_checkpoint
from ..errors import AsitError
from ..health import health_summary, loss_summary, run_report

# a run folder's checkpoint shown by `asit info RUN_DIR`, in order of preference
RUN_CHECKPOINTS = ("encoder.pt", "checkpoints/last.ckpt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint or exported encoder, or a pretraining run folder (its "
                                           "encoder, then the loss and health summary of its logs)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of aligned text")


def locate(path: Path) -> tuple[Path | None, Path | None]:
    """(checkpoint, run folder with logs) for a file or a run folder; either may be None."""
    if path.is_dir():
        ckpt = next((path / name for name in RUN_CHECKPOINTS if (path / name).is_file()), None)
        run = path if any(path.glob("logs/version_*/metrics.csv")) else None
        if ckpt is None and run is None:
            raise AsitError(f"{path} is a folder without {' or '.join(RUN_CHECKPOINTS)} or logs/: not a pretraining "
                            "run folder")
        return ckpt, run
    # runs/<name>/encoder.pt or runs/<name>/checkpoints/<file>.ckpt: the logs are one or two folders up
    run = next((p for p in (path.parent, path.parent.parent) if any(p.glob("logs/version_*/metrics.csv"))), None)
    return path, run


def run(args: argparse.Namespace) -> int:
    ckpt, run_dir = locate(Path(args.checkpoint))
    info: dict[str, Any] = describe_checkpoint(ckpt) if ckpt is not None else {}
    if args.json:
        if run_dir is not None:
            info["run"] = {"dir": str(run_dir), "losses": loss_summary(run_dir),
                           "health": [dataclasses.asdict(row) for row in health_summary(run_dir)]}
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key == "meta":
            value = {k: v for k, v in value.items() if k != "config"}
        print(f"{key:>12}: {value}")
    if run_dir is not None:
        print(f"{'run':>12}: {run_dir}")
        print("\n".join(run_report(run_dir)))
    return 0
