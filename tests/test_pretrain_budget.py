"""Pretraining budgets: trainer.max_steps and trainer.max_time end the run and the schedules together; `asit pretrain`
prints progress with an ETA and a first -> last epoch summary of every loss term and health signal."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from upstream.cli import main as cli_main
from upstream.errors import AsitError
from upstream.pretrain import budget_steps, load_pretrain_config, read_metrics, run_pretraining
from upstream.pretrain_config import parse_max_time

from conftest import TINY_PRETRAIN_OVERRIDES

# 8 clips, batch 4: 2 optimizer steps per epoch
SCHEDULES = ["optim.min_lr=1e-5", "optim.weight_decay=0.04", "optim.weight_decay_end=0.4",
             "objective.teacher_momentum=0.9", "objective.teacher_momentum_end=1.0"]


def _last_step_values(run_dir: Path) -> dict[str, float]:
    logs = read_metrics(run_dir)
    rows = logs.dropna(subset=["train/lr"])
    return {name: float(rows[f"train/{name}"].iloc[-1]) for name in ("lr", "weight_decay", "teacher_momentum")}


def test_max_steps_ends_the_run_and_every_schedule_at_that_step(tmp_path: Path, tone_folder: Path, capsys) -> None:
    run_dir = tmp_path / "steps"
    argv = ["pretrain", "demo_tiny", *TINY_PRETRAIN_OVERRIDES, *SCHEDULES, f"data.source={tone_folder}",
            f"run_dir={run_dir}", "trainer.max_epochs=3", "trainer.max_steps=3"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    logs = read_metrics(run_dir)
    assert logs["train/loss_step"].notna().sum() == 3                  # 3 of the 3 x 2 steps the epochs allow
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["global_step"], summary["schedule_steps"], summary["budget_steps"]) == (3, 3, None)
    # the last optimizer step (index 2) runs at the schedules' final values
    last = _last_step_values(run_dir)
    assert last["lr"] == pytest.approx(1e-5, rel=1e-6)
    assert last["weight_decay"] == pytest.approx(0.4, rel=1e-6)
    assert last["teacher_momentum"] == pytest.approx(1.0, rel=1e-9)
    lrs = logs["train/lr"].dropna().tolist()
    assert lrs[1] > 1e-5 and len(lrs) == 3                               # not at the floor before the end

    # progress: one line per epoch, with the schedules' 3 steps as the total and an ETA
    progress = re.findall(r"\[asit pretrain\] epoch (\d)/3 step (\d)/(\d) \(\d+%\) loss (\d+\.\d+) elapsed "
                          r"\d+:\d\d:\d\d ETA (\d+:\d\d:\d\d)", out)
    assert [(e, s, t) for e, s, t, _, _ in progress] == [("1", "2", "3"), ("2", "3", "3")]
    assert progress[-1][4] == "0:00:00"
    # the end-of-run summary: each loss term, first and last epoch mean, as logged
    epoch_means = logs.dropna(subset=["train/loss_epoch"])
    for term in ("loss", "loss_recon", "loss_local", "loss_global"):
        first, last = epoch_means[f"train/{term}_epoch"].iloc[[0, -1]]
        match = re.search(rf"^ +{term}: +(\S+) -> +(\S+)  (fell|did not fall)$", out, re.M)
        assert match, (term, out)
        assert (float(match[1]), float(match[2])) == pytest.approx((first, last), rel=1e-3)
    assert "losses (epoch mean, epoch 1 -> 2):" in out and "health (epoch 1 -> 2; verdict on the last value):" in out
    assert re.search(r"^ +teacher_entropy_cls_ratio: +\S+ -> +\S+  (ok|collapsed .*)$", out, re.M)


class StopAfterEpoch(Callback):
    """A crash right after epoch `index` (0-based) was checkpointed."""

    def __init__(self, index: int) -> None:
        self.index = index

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        if trainer.current_epoch == self.index:
            trainer.should_stop = True


class FakeClock(Callback):
    """Every optimizer step appears to take 600 s to the time-budget estimate (Lightning's own Timer keeps the real
    clock and a 1-hour limit, so only the estimate decides)."""

    def on_train_start(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        pl_module._clock = lambda: 600.0 * pl_module.global_step


def test_a_time_budget_fixes_the_schedules_to_the_estimated_steps(tmp_path: Path, tone_folder: Path,
                                                                  capsys) -> None:
    config = load_pretrain_config("demo_tiny", TINY_PRETRAIN_OVERRIDES + SCHEDULES + [
        f"data.source={tone_folder}", f"run_dir={tmp_path / 'timed'}", "trainer.max_epochs=6",
        "trainer.max_time=00:01:00:00", "trainer.budget_probe_steps=2"])
    run_dir = run_pretraining(config, extra_callbacks=[FakeClock()])
    # timed from step 1 to step 3: 600 s/step; ≈ 3600 s left -> 3 + int(0.9 · 3600 / 600) = 8 of the 12 steps
    assert "600 s/step over 2 steps" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["global_step"], summary["schedule_steps"], summary["budget_steps"]) == (8, 8, 8)
    assert read_metrics(run_dir)["train/loss_step"].notna().sum() == 8
    last = _last_step_values(run_dir)
    assert last["lr"] == pytest.approx(1e-5, rel=1e-6) and last["teacher_momentum"] == pytest.approx(1.0)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["budget_steps"] == 8

    # interrupted after epoch 2 (step 4, the budget fixed at step 3), resumed: the restored budget, not a new
    # estimate (which would allow all 12 steps), and the uninterrupted run's weights
    interrupted = dataclasses.replace(config, run_dir=str(tmp_path / "interrupted"))
    run_pretraining(interrupted, extra_callbacks=[FakeClock(), StopAfterEpoch(1)])
    assert json.loads((tmp_path / "interrupted" / "summary.json").read_text())["global_step"] == 4
    resumed = run_pretraining(interrupted, resume="auto", extra_callbacks=[FakeClock()])
    assert json.loads((resumed / "summary.json").read_text())["global_step"] == 8
    a = ckpt["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_budget_steps_and_max_time_parsing() -> None:
    assert budget_steps(20, 2.0, 1000.0) == 20 + 450
    assert budget_steps(20, 2.0, 0.0) == 21                 # at least one more step
    assert parse_max_time("00:01:30:00") == timedelta(hours=1, minutes=30)
    assert parse_max_time("90") == timedelta(minutes=90) and parse_max_time("") is None
    for bad in ("soon", "1:2", "0"):
        with pytest.raises(AsitError, match="trainer.max_time must be"):
            parse_max_time(bad)
    with pytest.raises(AsitError, match="trainer.max_steps must be -1"):
        load_pretrain_config("demo_tiny", ["trainer.max_steps=0"])
    config = load_pretrain_config("demo_tiny", ["trainer.max_time=2.5"])
    assert parse_max_time(config.trainer.max_time) == timedelta(minutes=2.5)
