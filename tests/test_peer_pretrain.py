"""The ViT peers end to end: `asit pretrain` of ACM-SSKD and the SupMAM family on the embedded corpus (labels from its
AudioSet list, a teacher from a local file), then the exports through s3prl's upstream entry, the HEAR API, a probe
and a finetuning cell."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_PRETRAIN_OVERRIDES

import asit_hear
from tasks.api import EncoderSpec, TaskCell
from tasks.run import PROTOCOLS, run_task
from upstream.checkpoint import load_encoder
from upstream.cli import main as cli_main
from upstream.demo import LOSS_TERMS
from upstream.encoders import AudioViT
from upstream.pretrain import read_metrics
from upstream.s3prl_upstream import hubconf

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_torch_thread")]

# the demo's tiny-ViT overrides without ASiT's own objective keys
VIT_OVERRIDES = [o for o in TINY_PRETRAIN_OVERRIDES if not o.startswith("objective.")]


def _pretrain(config: str, run_dir: Path, source: Path, *extra: str) -> Path:
    argv = ["pretrain", config, *VIT_OVERRIDES, f"data.source={source}", f"run_dir={run_dir}", *extra]
    assert cli_main(argv) == 0
    return run_dir


def _logged_terms(run_dir: Path, terms: tuple[str, ...]) -> dict[str, float]:
    metrics = read_metrics(run_dir)
    values = {t: metrics[f"train/{t}_step"].dropna() for t in terms}
    assert all(len(v) and np.isfinite(v).all() for v in values.values()), values
    return {t: float(v.iloc[-1]) for t, v in values.items()}


def _check_export(run_dir: Path, corpus, tmp_path: Path) -> None:
    """The export is a plain ViT that the Lightning checkpoint reproduces, and it serves HEAR, probe, finetune."""
    export = load_encoder(run_dir / "encoder.pt")
    assert isinstance(export.encoder, AudioViT)
    from_ckpt = load_encoder(run_dir / "checkpoints" / "last.ckpt")
    for key, value in export.encoder.state_dict().items():
        torch.testing.assert_close(from_ckpt.encoder.state_dict()[key], value, msg=key)
    expert = hubconf.asit_local(ckpt=str(run_dir / "checkpoints" / "last.ckpt"))     # s3prl's upstream entry
    hidden = expert([0.1 * torch.randn(16000), 0.1 * torch.randn(8000)])["hidden_states"]
    assert len(hidden) == export.encoder.depth + 1 and all(torch.isfinite(h).all() for h in hidden)
    model = asit_hear.load_model(str(run_dir / "encoder.pt"))
    scene = asit_hear.get_scene_embeddings(0.1 * torch.randn(2, 16000), model)
    assert scene.shape == (2, model.scene_embedding_size) and torch.isfinite(scene).all()
    for mode, overrides in (("probe", {"num_workers": 0, "n_jobs": 1, "C": [1.0], "max_iter": 200,
                                       "cache_dir": str(tmp_path / "cache")}),
                            ("finetune", {"epochs": 1, "batch_size": 8, "num_workers": 0, "accelerator": "cpu",
                                          "train_frames": 64, "eval_frames": 64, "warmup_epochs": 0})):
        cell = TaskCell(EncoderSpec(run_dir.name, str(run_dir / "encoder.pt")), "esc50", mode, PROTOCOLS["esc50"],
                        seed=0, fold=2, data_root=str(corpus.esc50), overrides=overrides)
        result = run_task(cell, tmp_path / f"{run_dir.name}-{mode}")
        assert result.metric == "accuracy" and 0.0 <= result.value <= 1.0


def test_acm_sskd_pretrains_logs_every_term_and_exports_a_vit(corpus, tmp_path: Path) -> None:
    run = _pretrain("demo_acm_sskd_tiny", tmp_path / "acm", corpus.unlabeled, "trainer.max_epochs=1")
    _logged_terms(run, LOSS_TERMS["acm_sskd"])
    _check_export(run, corpus, tmp_path)


def test_supmam_trains_on_the_audioset_list_with_its_labels(corpus, tmp_path: Path) -> None:
    segments = corpus.audioset / "metadata" / "balanced_train_segments.csv"
    run = _pretrain("demo_supmam_tiny", tmp_path / "supmam", segments, "trainer.max_epochs=1")
    _logged_terms(run, LOSS_TERMS["supmam"])
    _check_export(run, corpus, tmp_path)


def test_mam_clap_with_a_local_teacher_file(corpus, tiny_encoder_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """MAM-CLAP's targets from a frozen teacher file (here a tiny ViT export through the `asit-hear` adapter); the
    Lightning checkpoint is read without that file, and a missing teacher stops `asit pretrain` before training."""
    teacher = tmp_path / "teacher.pt"
    shutil.copy(tiny_encoder_file, teacher)
    variant = ["objective.variant=mam_clap", "objective.teacher.adapter=asit-hear", f"objective.teacher.path={teacher}",
               "trainer.max_epochs=1", "data.labels=false"]
    run = _pretrain("demo_supmam_tiny", tmp_path / "mam_clap", corpus.unlabeled, *variant, "data.missing=error")
    terms = _logged_terms(run, ("target", "target_visible", "target_masked", "loss"))
    assert terms["target"] == pytest.approx(terms["target_visible"] + terms["target_masked"], rel=1e-4)
    teacher.unlink()
    assert isinstance(load_encoder(run / "checkpoints" / "last.ckpt").encoder, AudioViT)
    capsys.readouterr()
    missing = ["pretrain", "demo_supmam_tiny", *VIT_OVERRIDES, *variant, f"data.source={corpus.unlabeled}",
               f"run_dir={tmp_path / 'no_teacher'}"]
    assert cli_main(missing) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"teacher.path {teacher} does not exist (asit-hear teacher)")
    assert not (tmp_path / "no_teacher" / "checkpoints").exists()
