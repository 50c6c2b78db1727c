from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from upstream.checkpoint import load_encoder
from upstream.errors import AsitError
from upstream.pretrain import load_pretrain_config, read_metrics, run_pretraining
from upstream.pretrain_data import list_audio

from conftest import TINY_PRETRAIN_OVERRIDES


def _config(tmp: Path, source: Path, name: str, *extra: str):
    return load_pretrain_config("demo_tiny", TINY_PRETRAIN_OVERRIDES + [
        f"data.source={source}", f"run_dir={tmp / name}", "trainer.max_epochs=2", *extra])


class StopAfterFirstEpoch(Callback):
    """Simulates a crash right after the epoch-1 checkpoint was written."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            trainer.should_stop = True


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def test_interrupt_and_resume_reproduces_the_uninterrupted_run(tmp_path, tone_folder) -> None:
    straight = run_pretraining(_config(tmp_path, tone_folder, "straight"))
    interrupted_cfg = _config(tmp_path, tone_folder, "interrupted")
    run_pretraining(interrupted_cfg, extra_callbacks=[StopAfterFirstEpoch()])
    assert torch.load(Path(interrupted_cfg.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    resumed = run_pretraining(interrupted_cfg, resume="auto")
    a, b = _weights(straight), _weights(resumed)
    assert len(read_metrics(resumed)) == len(read_metrics(straight))   # the first part's logs survive
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the run really trained: the student moved away from its initialisation and the teacher followed it
    logs = read_metrics(straight)
    assert logs["train/loss_step"].notna().sum() == 4
    enc = load_encoder(straight / "encoder.pt")
    assert enc.source == "export" and enc.meta["objective"] == "asit"


def test_logs_hold_every_loss_term_and_schedules(tmp_path, tone_folder) -> None:
    run = run_pretraining(_config(tmp_path, tone_folder, "logs", "trainer.max_epochs=1"))
    logs = read_metrics(run)
    for column in ("train/loss_recon_step", "train/loss_local_step", "train/loss_global_step", "train/loss_epoch",
                   "train/lr", "train/weight_decay", "train/teacher_momentum", "train/teacher_temp",
                   "health/teacher_entropy_cls_epoch", "health/std_teacher_step", "health/recon_vs_mean_epoch"):
        assert column in logs.columns and logs[column].notna().any(), column
    # no loss column that reads like Lightning's own global_step
    assert not any(c.startswith(("train/global", "train/local", "train/recon")) for c in logs.columns)
    assert (run / "tensorboard").is_dir() and (run / "config.yaml").is_file()


def test_manifests_and_missing_files(tmp_path, tone_folder) -> None:
    files = sorted(tone_folder.glob("*.wav"))
    json_manifest = tmp_path / "train.json"
    json_manifest.write_text('{"data": [' + ", ".join(f'{{"wav": "{p}", "labels": "/m/0"}}' for p in files) + "]}")
    assert list_audio(json_manifest) == files
    csv_manifest = tmp_path / "train.csv"
    csv_manifest.write_text("wav\n" + "\n".join(p.name for p in files) + "\n")
    assert list_audio(csv_manifest, root=tone_folder) == files
    (tmp_path / "bad.csv").write_text("wav\nnope1.wav\nnope2.wav\n")
    with pytest.raises(AsitError, match=r"2 file\(s\) listed in .*bad.csv do not exist, e.g. .*nope1.wav"):
        list_audio(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("path\nx.wav\n")
    with pytest.raises(AsitError, match="needs a 'wav' column"):
        list_audio(tmp_path / "cols.csv")
    with pytest.raises(AsitError, match="does not exist"):
        list_audio(tmp_path / "nowhere")


@pytest.mark.e2e
def test_two_process_ddp_on_cpu_completes(tmp_path, tone_folder) -> None:
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "upstream.cli", "pretrain", "demo_tiny", *TINY_PRETRAIN_OVERRIDES,
           f"data.source={tone_folder}", f"run_dir={run_dir}", "trainer.max_epochs=1", "data.batch_size=2",
           "trainer.devices=2", "trainer.strategy=ddp"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = read_metrics(run_dir)
    assert logs["train/loss_step"].notna().sum() == 2        # 8 clips / (2 processes x batch 2) = 2 steps
    assert load_encoder(run_dir / "encoder.pt").encoder.config.depth == 2
