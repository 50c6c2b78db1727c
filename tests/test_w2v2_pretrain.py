"""`asit pretrain` with the conformer wav2vec 2.0 objective: a tiny run on CPU, its logs, its statistics, its export,
exact resume, and the checks that stop a bad config before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from upstream.checkpoint import load_encoder
from upstream.cli import main as cli_main
from upstream.errors import AsitError
from upstream.frontend import Frontend, FrontendConfig
from upstream.objectives import build_objective
from upstream.pretrain import load_pretrain_config, read_metrics, run_pretraining
from upstream.pretrain_data import list_audio
from upstream.schedules import TrainingProgress

from test_pretrain import StopAfterFirstEpoch, _weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_W2V2 = ["encoder.embed_dim=32", "encoder.depth=2", "encoder.num_heads=2", "encoder.ffn_dim=64",
             "encoder.latent_dim=32", "encoder.first_kernel_size=7", "encoder.kernel_size=5",
             "encoder.trained_frames=64", "data.crop_frames=64", "data.batch_size=4", "data.num_workers=0",
             "objective.final_dim=32", "objective.num_negatives=5", "objective.quantizer.entries=16",
             "objective.quantizer.codebook_dim=32", "trainer.enable_progress_bar=false", "optim.warmup_epochs=1"]


def _config(tmp: Path, source: Path, name: str, *extra: str):  # type: ignore[no-untyped-def]
    return load_pretrain_config("demo_conformer_tiny", TINY_W2V2 + [
        f"data.source={source}", f"run_dir={tmp / name}", "trainer.max_epochs=2", *extra])


def test_a_tiny_run_logs_every_term_estimates_its_statistics_and_exports_a_conformer(tmp_path, tone_folder) -> None:
    run = run_pretraining(_config(tmp_path, tone_folder, "run"))
    logs = read_metrics(run)
    for column in ("train/contrastive_step", "train/diversity_step", "train/feature_penalty_step",
                   "train/loss_epoch", "train/accuracy_step", "train/prob_perplexity_step", "train/gumbel_temp",
                   "train/lr"):
        assert logs[column].notna().any(), column
    assert np.isfinite(logs["train/loss_step"].dropna()).all()
    # the statistics were estimated from the training clips (the frontend's raw fbank over all 8 of them)
    frontend = FrontendConfig(num_mel_bins=64, frame_length_ms=64, frame_shift_ms=20, stats="estimate", mean=0.0,
                              std=1.0)
    fbanks = torch.cat([Frontend(frontend).fbank(Frontend(frontend).load(f)).flatten()
                        for f in list_audio(tone_folder)]).double()
    loaded = load_encoder(run / "encoder.pt")
    assert loaded.encoder.arch == "conformer" and loaded.meta["objective"] == "wav2vec2_conformer"
    assert loaded.frontend.mean == pytest.approx(float(fbanks.mean()), rel=1e-6)
    assert loaded.frontend.std == pytest.approx(float(fbanks.std(unbiased=False)), rel=1e-5)
    # the Lightning checkpoint gives the same encoder without any Lightning module being built
    from_ckpt = load_encoder(run / "checkpoints" / "last.ckpt")
    for (name, a), b in zip(loaded.encoder.state_dict().items(), from_ckpt.encoder.state_dict().values()):
        assert torch.equal(a, b), name


def test_interrupt_and_resume_reproduces_the_uninterrupted_run(tmp_path, tone_folder) -> None:
    straight = run_pretraining(_config(tmp_path, tone_folder, "straight"))
    config = _config(tmp_path, tone_folder, "interrupted")
    run_pretraining(config, extra_callbacks=[StopAfterFirstEpoch()])
    resumed = run_pretraining(config, resume="auto")
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_the_gumbel_temperature_follows_the_step_and_the_total_weighs_its_terms(tone_folder) -> None:
    config = load_pretrain_config("demo_conformer_tiny", TINY_W2V2 + [f"data.source={tone_folder}",
                                                                     "frontend.mean=-6", "frontend.std=4"])
    objective = build_objective(config.objective, config.encoder)
    q = config.objective["quantizer"]
    for step in (0, 10, 1000):
        progress = TrainingProgress(step=step, total_steps=2000, epoch=0, steps_per_epoch=10)
        expected = max(q["temp_start"] * q["temp_decay"] ** step, q["temp_end"])
        assert objective.metrics(progress)["gumbel_temp"] == pytest.approx(expected)
    # the total is the weighted sum of its terms (wav2vec 2.0's weights 0.1 and 10 in this config)
    torch.manual_seed(0)
    views = torch.randn(2, 1, 1, 64, 64)
    mask = torch.zeros(2, 1, 16, dtype=torch.bool)
    mask[:, 0, [0, 1, 5, 9]] = True
    progress = TrainingProgress(step=0, total_steps=10, epoch=0, steps_per_epoch=10)
    losses = objective.training_losses({"views": views, "step_mask": mask}, progress)
    expected_total = losses["contrastive"] + 0.1 * losses["diversity"] + 10.0 * losses["feature_penalty"]
    assert float(losses["loss"].detach()) == pytest.approx(float(expected_total.detach()), rel=1e-6)


def test_targets_come_from_the_clip_before_masking(tone_folder) -> None:
    """Two clips that differ only inside a masked step give the context encoder the same input; their losses differ
    only if the targets are taken before masking (the regression torchaudio's prototype had: targets after the
    in-place mask all equal the mask vector)."""
    config = load_pretrain_config("demo_conformer_tiny", TINY_W2V2 + [
        f"data.source={tone_folder}", "frontend.mean=-6", "frontend.std=4", "objective.targets=continuous"])
    objective = build_objective(config.objective, config.encoder).eval()
    torch.manual_seed(0)
    views = torch.randn(1, 1, 1, 64, 64)
    other = views.clone()
    other[0, 0, 0, 0:4] += 1.0                                        # frames of step 0 only
    mask = torch.zeros(1, 1, 16, dtype=torch.bool)
    mask[0, 0, [0, 1, 5, 9]] = True
    progress = TrainingProgress(step=0, total_steps=10, epoch=0, steps_per_epoch=10)
    results = []
    for clip in (views, other):
        torch.manual_seed(1)                                          # the same distractor draws
        with torch.no_grad():
            results.append(float(objective.training_losses({"views": clip, "step_mask": mask}, progress)
                                 ["contrastive"]))
    assert results[0] != pytest.approx(results[1])
    assert all(r > 0 for r in results)


def test_bad_configs_fail_before_training(tmp_path, tone_folder) -> None:
    with pytest.raises(AsitError, match="objective wav2vec2_conformer trains a conformer; set encoder.arch"):
        config = load_pretrain_config("demo_tiny", [f"data.source={tone_folder}", "objective.name=wav2vec2_conformer"])
        build_objective(config.objective, config.encoder)
    with pytest.raises(AsitError, match="objective asit trains a ViT"):
        config = load_pretrain_config("demo_conformer_tiny", [f"data.source={tone_folder}", "objective.name=asit"])
        build_objective(config.objective, config.encoder)
    with pytest.raises(AsitError, match="data.crop_frames 66 must be a multiple of the conformer encoder's 4"):
        load_pretrain_config("demo_conformer_tiny", ["data.crop_frames=66"])
    with pytest.raises(AsitError, match="frontend.num_mel_bins 128 differs from encoder.num_mel_bins 64"):
        load_pretrain_config("demo_conformer_tiny", ["frontend.num_mel_bins=128"])
    with pytest.raises(AsitError, match="encoder.arch 'mamba' unknown; registered: vit, conformer"):
        load_pretrain_config("demo_conformer_tiny", ["encoder.arch=mamba"])


def test_asit_info_describes_a_conformer_export(tmp_path, tiny_conformer_file, capsys) -> None:
    assert cli_main(["info", str(tiny_conformer_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "conformer" and info["encoder"].startswith("conformer tiny: dim 32, depth 2")
    assert info["frontend"]["num_mel_bins"] == 64
