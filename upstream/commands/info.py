"""asit info CHECKPOINT|RUN_DIR [--json]: what a file holds, then its model card (upstream/model_card.py) when
`asit export` wrote one beside it; for a run folder, also the loss and health summary of its logs."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..checkpoint import describe_checkpoint
from ..errors import AsitError
from ..health import health_summary, loss_summary, run_report
from ..identity import encoder_identity
from ..model_card import card_identity, card_path

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


def read_card(ckpt: Path) -> str | None:
    """The model card beside `ckpt` (written by `asit export`), or None when there is none."""
    path = card_path(ckpt)
    if path == ckpt or not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AsitError(f"model card {path} cannot be read ({exc})") from None


def stale_card(ckpt: Path, card: str) -> str | None:
    """One line when the card was written for another encoder than the file now beside it (the file was replaced:
    a rerun, a copy), else None. Costs one more load of the file, made only when there is a card."""
    written_for = card_identity(card)
    identity = encoder_identity(ckpt)
    if written_for == identity:
        return None
    return (f"{'card':>12}: STALE: {card_path(ckpt).name} was written for encoder "
            f"{(written_for or 'unknown')[:16]}, this file is {identity[:16]}; `asit export {ckpt} OUT.pt` writes a "
            "current one")


def no_card_hint(ckpt: Path) -> str:
    """One line: there is no card, and how to get one."""
    return (f"{'card':>12}: none ({card_path(ckpt).name} does not exist beside it); `asit export {ckpt} OUT.pt` "
            "writes an encoder with its model card OUT.md")


def run(args: argparse.Namespace) -> int:
    ckpt, run_dir = locate(Path(args.checkpoint))
    info: dict[str, Any] = describe_checkpoint(ckpt) if ckpt is not None else {}
    card = read_card(ckpt) if ckpt is not None else None
    stale = stale_card(ckpt, card) if ckpt is not None and card is not None else None
    if args.json:
        if run_dir is not None:
            info["run"] = {"dir": str(run_dir), "losses": loss_summary(run_dir),
                           "health": [dataclasses.asdict(row) for row in health_summary(run_dir)]}
        if ckpt is not None:
            info["card"] = card
            if card is not None:
                info["card_stale"] = stale is not None
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key == "meta":
            value = {k: v for k, v in value.items() if k != "config"}
        print(f"{key:>12}: {value}")
    if run_dir is not None:
        print(f"{'run':>12}: {run_dir}")
        print("\n".join(run_report(run_dir)))
    if card is not None:
        if stale is not None:
            print(stale)
        print()
        print(card, end="" if card.endswith("\n") else "\n")
    elif ckpt is not None:
        print(no_card_hint(ckpt))
    return 0
