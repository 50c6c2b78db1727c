"""What long runs print: Lightning's start-up chatter kept out of each cell, and progress bars that show only on a
terminal (a suite's log file or a worker's pipe gets the one-line status per cell instead)."""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

import lightning as L
from tqdm.auto import tqdm

# Lightning reports through these loggers at INFO: "GPU available: ...", "💡 Tip: ...", "Loading
# `train_dataloader` to estimate number of stepping batches", "Restoring states from the checkpoint path ..."
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")

Item = TypeVar("Item")
# every bar: drawn only when its stream is a terminal (tqdm's `disable=None`), wiped when done, as wide as the terminal
_TRANSIENT = {"disable": None, "leave": False, "dynamic_ncols": True}


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO lines out of sight for the block, its warnings and errors kept; levels restored after."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def progress(items: Iterable[Item], *, desc: str, unit: str = "it", file: IO[str] | None = None) -> Iterable[Item]:
    """`items`, with a transient bar on a terminal (nothing when the stream is not a tty)."""
    return tqdm(items, desc=desc, unit=unit, file=file, **_TRANSIENT)


class EpochBar(L.Callback):
    """One bar over a fit's epochs, with the epoch's train loss and validation score: Lightning's own bar redraws
    per batch, too busy for cells that are a few epochs of a few batches. Shown only on a terminal."""

    def __init__(self, desc: str, *, file: IO[str] | None = None) -> None:
        self.desc, self.file = desc, file
        self.bar: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bar = tqdm(total=trainer.max_epochs, initial=trainer.current_epoch, desc=self.desc, unit="epoch",
                        file=self.file, mininterval=0, **_TRANSIENT)     # every epoch drawn: they are few and slow

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is None:
            return
        shown = {}
        for key, label in (("train/loss_epoch", "loss"), ("valid/metric", "valid")):
            value = trainer.callback_metrics.get(key)
            if value is not None and math.isfinite(float(value)):
                shown[label] = f"{float(value):.4g}"
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)


__all__ = ["EpochBar", "LIGHTNING_LOGGERS", "progress", "quiet_lightning"]
