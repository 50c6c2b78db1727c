"""Pretraining health signals: the statistics, their verdicts, and that a constructed collapse trips them while a
normal tiny run does not (through the logs and `asit info`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from upstream.cli import main as cli_main
from upstream.health import (HEALTH_RULES, feature_std, health_summary, mean_entropy, read_metrics, recon_vs_mean,
                             verdict)
from upstream.objectives import build_objective
from upstream.objectives.asit import ASiTObjective
from upstream.pretrain import PretrainModule, load_pretrain_config, run_pretraining
from upstream.schedules import TrainingProgress

from conftest import TINY_PRETRAIN_OVERRIDES

ASIT_SIGNALS = ("teacher_entropy_cls", "teacher_entropy_cls_ratio", "teacher_entropy_local",
                "teacher_entropy_local_ratio", "center_norm_cls", "center_norm_local", "std_student", "std_teacher",
                "recon_vs_mean")


# -- the statistics --------------------------------------------------------------------------------------------------
def test_feature_std_is_one_for_isotropic_rows_and_zero_for_identical_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    assert feature_std(torch.randn(4096, 64, generator=gen)).item() == pytest.approx(1.0, abs=0.03)
    same = torch.randn(1, 64, generator=gen).expand(32, 64)
    assert feature_std(same).item() == pytest.approx(0.0, abs=1e-6)
    # scale does not matter (rows are L2-normalised), a shared offset does: it shrinks the spread of directions
    rows = torch.randn(256, 2, 32, generator=gen)
    assert feature_std(100.0 * rows).item() == pytest.approx(feature_std(rows).item(), rel=1e-5)
    assert feature_std(rows + 10.0).item() < 0.2 * feature_std(rows).item()
    assert math.isnan(feature_std(torch.randn(1, 8)).item())


def test_mean_entropy_spans_zero_to_log_k_and_its_row_sample_estimates_the_whole() -> None:
    k = 50
    assert mean_entropy(torch.full((7, k), 1.0 / k)).item() == pytest.approx(math.log(k))
    one_hot = torch.zeros(7, k)
    one_hot[:, 3] = 1.0
    assert mean_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    p = torch.softmax(torch.randn(30, 110, k, generator=torch.Generator().manual_seed(1)) / 0.5, -1)
    exact = -(p * p.log()).sum(-1).mean().item()
    whole = mean_entropy(p, max_rows=p.shape[0] * p.shape[1])
    assert whole.item() == pytest.approx(exact, rel=1e-5)
    assert mean_entropy(p, max_rows=256).item() == pytest.approx(exact, rel=0.02)   # 256 of 3300 rows
    assert mean_entropy(torch.zeros(0, k)).isnan()
    assert mean_entropy(p.bfloat16()).item() == pytest.approx(whole.item(), rel=1e-2)   # bf16 probs: in fp32


def test_recon_vs_mean_is_one_for_the_mean_predictor_and_ignores_unmasked_pixels() -> None:
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(4, 1, 16, 8, generator=gen) * 3 + torch.arange(4.0)[:, None, None, None]
    mask = torch.rand(4, 1, 16, 8, generator=gen) < 0.6
    means = torch.stack([target[i][mask[i]].mean() for i in range(4)])[:, None, None, None]
    predicted_mean = torch.where(mask, means, torch.full_like(target, 1e3))    # unmasked pixels: anything
    assert recon_vs_mean(predicted_mean, target, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert recon_vs_mean(target, target, mask).item() == pytest.approx(0.0, abs=1e-6)
    # a better-than-mean guess lands in between; the global mean (not each sample's) is worse than the mean
    halfway = torch.where(mask, 0.5 * (target + means), target)
    assert 0.3 < recon_vs_mean(halfway, target, mask).item() < 0.7
    assert recon_vs_mean(torch.full_like(target, target[mask].mean()), target, mask).item() > 1.05


def test_verdicts_follow_the_rules() -> None:
    assert verdict("teacher_entropy_cls_ratio", 0.02) == "collapsed (one-hot teacher)"
    assert verdict("teacher_entropy_local_ratio", 0.995) == "collapsed (uniform teacher)"
    assert verdict("teacher_entropy_cls_ratio", 0.6) == "ok"
    assert verdict("std_teacher", 0.001).startswith("collapsed") and verdict("std_encoder", 0.3) == "ok"
    assert verdict("recon_vs_mean", 1.0).startswith("not learning") and verdict("recon_vs_mean_inter", 0.5) == "ok"
    assert verdict("center_norm_cls", 5.0) == "" and verdict("teacher_entropy_cls", 0.0) == ""
    assert verdict("std_student", float("nan")).startswith("n/a")
    assert len({rule.pattern for rule in HEALTH_RULES}) == len(HEALTH_RULES)


# -- in the objective (no Lightning): a constant teacher, a mean-predicting reconstruction --------------------------
def _objective_and_batch(tone_folder: Path) -> tuple[ASiTObjective, dict[str, torch.Tensor]]:
    config = load_pretrain_config("demo_tiny", TINY_PRETRAIN_OVERRIDES + [f"data.source={tone_folder}"])
    torch.manual_seed(0)
    module = PretrainModule(config)
    objective = module.objective.eval()       # no drop path: two calls on one batch give the same student
    assert isinstance(objective, ASiTObjective)
    gen = torch.Generator().manual_seed(0)
    views = torch.randn(4, 2, 1, 64, 128, generator=gen)
    transform = objective.view_transform()
    rng = np.random.default_rng(0)
    extra = [transform({"views": v}, rng) for v in views]
    batch = {"views": views, **{k: torch.stack([e[k] for e in extra]) for k in extra[0]}}
    return objective, batch


PROGRESS = TrainingProgress(step=0, total_steps=10, epoch=0, steps_per_epoch=2)


def test_a_constant_teacher_trips_the_collapse_signal(tone_folder: Path) -> None:
    objective, batch = _objective_and_batch(tone_folder)
    objective.training_losses(batch, PROGRESS)
    healthy = {k: float(v) for k, v in objective.pop_health().items()}
    assert set(healthy) == set(ASIT_SIGNALS)
    assert objective.pop_health() == {}                       # popped: a signal is logged once
    assert verdict("std_teacher", healthy["std_teacher"]) == "ok"
    assert verdict("std_student", healthy["std_student"]) == "ok"

    def constant(x: torch.Tensor) -> torch.Tensor:        # the teacher ignores its input
        return torch.ones(x.shape[0], 1 + 4 * 8, 64)
    objective.teacher.forward_features = constant         # type: ignore[method-assign]
    objective.training_losses(batch, PROGRESS)
    collapsed = {k: float(v) for k, v in objective.pop_health().items()}
    assert collapsed["std_teacher"] == pytest.approx(0.0, abs=1e-6)
    assert verdict("std_teacher", collapsed["std_teacher"]).startswith("collapsed")
    assert collapsed["std_student"] == pytest.approx(healthy["std_student"], rel=1e-5)   # the student is untouched


def test_a_reconstruction_that_predicts_each_views_mean_scores_one(tone_folder: Path) -> None:
    objective, batch = _objective_and_batch(tone_folder)
    views = batch["views"].flatten(0, 1)                            # [2B, 1, T, F]
    masks = batch["masks"].flatten(0, 1)[:, None]
    means = torch.stack([v[m].mean() for v, m in zip(views, masks)])[:, None, None, None].expand_as(views)
    objective.recon_head.forward = lambda tokens, grid: means.clone()   # type: ignore[method-assign]
    losses = objective.training_losses(batch, PROGRESS)
    ratio = float(objective.pop_health()["recon_vs_mean"])
    assert ratio == pytest.approx(1.0, abs=1e-4) and verdict("recon_vs_mean", ratio).startswith("not learning")
    assert float(losses["loss_recon"]) == pytest.approx(float((views - means).abs()[masks].mean()), rel=1e-5)


VIT_OVERRIDES = [o for o in TINY_PRETRAIN_OVERRIDES if not o.startswith("objective.")]


@pytest.mark.parametrize("config_name, overrides, signals", [
    ("demo_acm_sskd_tiny", VIT_OVERRIDES, {"std_encoder", "recon_vs_mean_intra", "recon_vs_mean_inter"}),
    ("demo_supmam_tiny", VIT_OVERRIDES, {"std_encoder", "recon_vs_mean"}),
    ("demo_conformer_tiny", [], {"std_encoder"}),
])
def test_the_peer_objectives_record_their_signals(config_name: str, overrides: list[str], signals: set[str]) -> None:
    config = load_pretrain_config(config_name, overrides)
    torch.manual_seed(0)
    objective = build_objective(config.objective, config.encoder, config.frontend)
    needs = objective.data_needs()
    views = torch.randn(4, 1, 1, config.data.crop_frames, config.frontend.num_mel_bins)
    transform, rng = objective.view_transform(), np.random.default_rng(0)
    extra = [transform({"views": v}, rng) for v in views] if transform is not None else [{}] * 4
    batch = {"views": views, **{k: torch.stack([e[k] for e in extra]) for k in extra[0]}}
    if needs.labels:
        batch["labels"] = torch.eye(needs.num_classes)[torch.arange(4) % needs.num_classes]
    losses = objective.training_losses(batch, PROGRESS)
    health = {k: float(v) for k, v in objective.pop_health().items()}
    assert set(health) == signals and torch.isfinite(losses["loss"])
    assert all(math.isfinite(v) for v in health.values()), health
    assert 0.05 < health["std_encoder"] < 1.5          # a fresh encoder: spread, not collapsed
    assert all(0.5 < v < 3.0 for k, v in health.items() if k.startswith("recon_vs_mean")), health


# -- end to end: logs, verdicts and `asit info` ----------------------------------------------------------------------
class ZeroTeacherHead(Callback):
    """The constructed collapse: the teacher's head outputs zeros, so its centred softmax is uniform."""

    def on_train_start(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        head = pl_module.objective.teacher_head
        original = head.forward
        head.forward = lambda x: torch.zeros_like(original(x))


def _run(tmp: Path, source: Path, name: str, callbacks: list[Callback] | None = None) -> Path:
    config = load_pretrain_config("demo_tiny", TINY_PRETRAIN_OVERRIDES + [
        f"data.source={source}", f"run_dir={tmp / name}", "trainer.max_epochs=2"])
    return run_pretraining(config, extra_callbacks=callbacks)


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory: pytest.TempPathFactory, tone_folder: Path) -> Path:
    return _run(tmp_path_factory.mktemp("health"), tone_folder, "normal")


def test_a_normal_tiny_run_logs_every_signal_and_is_not_collapsed(normal_run: Path, capsys) -> None:
    metrics = read_metrics(normal_run)
    for name in ASIT_SIGNALS:
        for suffix in ("_step", "_epoch"):
            column = f"health/{name}{suffix}"
            assert column in metrics and np.isfinite(metrics[column].dropna()).all() and metrics[column].notna().any()
    rows = {row.name: row for row in health_summary(normal_run)}
    assert set(rows) == set(ASIT_SIGNALS) and all(row.epochs == 2 for row in rows.values())
    epoch_means = metrics.dropna(subset=["health/std_teacher_epoch"])["health/std_teacher_epoch"].tolist()
    assert (rows["std_teacher"].first, rows["std_teacher"].last) == pytest.approx((epoch_means[0], epoch_means[-1]))
    assert 0.05 < rows["teacher_entropy_cls_ratio"].last < 0.98
    assert rows["teacher_entropy_local"].last == pytest.approx(rows["teacher_entropy_local_ratio"].last * math.log(64))
    assert not any("collapsed" in row.verdict for row in rows.values())
    assert cli_main(["info", str(normal_run)]) == 0
    out = capsys.readouterr().out
    assert "exported encoder" in out and "collapsed" not in out
    assert "teacher_entropy_cls_ratio:" in out and "loss_global:" in out


def test_a_zeroed_teacher_head_is_reported_as_a_collapse(tmp_path: Path, tone_folder: Path, capsys) -> None:
    run = _run(tmp_path, tone_folder, "collapsed", [ZeroTeacherHead()])
    rows = {row.name: row for row in health_summary(run)}
    for scope in ("cls", "local"):
        row = rows[f"teacher_entropy_{scope}_ratio"]
        assert row.first == pytest.approx(1.0, abs=1e-5) and row.verdict == "collapsed (uniform teacher)"
    assert cli_main(["info", str(run / "checkpoints" / "last.ckpt")]) == 0    # a checkpoint finds its run's logs
    out = capsys.readouterr().out
    assert "lightning pretraining checkpoint" in out
    assert out.count("collapsed (uniform teacher)") == 2


def test_info_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert cli_main(["info", str(tmp_path)]) == 2
    assert "not a pretraining run folder" in capsys.readouterr().err
