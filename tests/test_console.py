"""Quiet cells: Lightning's start-up lines silenced and restored; bars only on a terminal (upstream/console.py)."""
from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from upstream.console import LIGHTNING_LOGGERS, EpochBar, progress, quiet_lightning


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def lightning_lines() -> Iterator[list[str]]:
    """What reaches Lightning's loggers ("lightning.pytorch" does not propagate to the root, so caplog would not see
    it; once heareval or s3prl has imported `pytorch_lightning`, the same lines come from that package's loggers)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())       # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    yield lines
    for logger in loggers:
        logger.removeHandler(handler)


def _trainer(**kwargs: object) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)


def test_quiet_lightning_drops_the_start_up_lines_keeps_warnings_and_restores_levels(lightning_lines: list[str]
                                                                                     ) -> None:
    before = [logging.getLogger(name).level for name in LIGHTNING_LOGGERS]
    _trainer()
    assert any(line.startswith("GPU available") for line in lightning_lines)      # what a cell printed so far
    lightning_lines.clear()
    with quiet_lightning():
        _trainer()
        logging.getLogger("lightning.pytorch.callbacks").warning("a warning still shows")
    assert lightning_lines == ["a warning still shows"]
    assert [logging.getLogger(name).level for name in LIGHTNING_LOGGERS] == before
    with pytest.raises(RuntimeError), quiet_lightning():
        raise RuntimeError("boom")
    assert [logging.getLogger(name).level for name in LIGHTNING_LOGGERS] == before
    _trainer()
    assert any(line.startswith("GPU available") for line in lightning_lines)


def test_progress_passes_items_through_and_draws_only_on_a_terminal() -> None:
    pipe, terminal = io.StringIO(), Terminal()
    assert list(progress(range(5), desc="esc50 test: embedding 5 clips", file=pipe)) == [0, 1, 2, 3, 4]
    assert pipe.getvalue() == ""
    assert list(progress(range(5), desc="esc50 test: embedding 5 clips", unit="batch", file=terminal)) == [0, 1, 2,
                                                                                                            3, 4]
    drawn = terminal.getvalue()
    assert drawn.startswith("\resc50 test: embedding 5 clips:   0%") and "0/5 [" in drawn
    assert drawn.endswith(" \r")                                  # transient: the line is wiped when done


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        loss = (self.layer(batch[0]) - batch[1]).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: list[torch.Tensor], index: int) -> None:
        self.log("valid/metric", 0.25 + 0.5 * self.current_epoch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(bar: EpochBar, epochs: int = 3) -> None:
    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=4)
    with quiet_lightning():
        _trainer(max_epochs=epochs, callbacks=[bar], log_every_n_steps=1).fit(_Tiny(), data, data)


def test_epoch_bar_counts_epochs_with_loss_and_valid_score_on_a_terminal_only() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    _fit(EpochBar("esc50 seed 0", file=terminal))
    drawn = terminal.getvalue()
    assert "esc50 seed 0" in drawn and "3/3" in drawn and "epoch" in drawn
    assert "valid=1.25" in drawn                                   # the last epoch's validation score
    assert re.search(r"loss=[0-9.e+-]+", drawn)
    _fit(EpochBar("esc50 seed 0", file=pipe))
    assert pipe.getvalue() == ""
