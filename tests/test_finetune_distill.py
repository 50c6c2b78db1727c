"""Finetuning with knowledge distillation (ACM-SSKD §3.4, eqs. 11–13): a frozen teacher's clip features as an extra
regression target beside the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ENCODER

import tasks.finetune as finetune
from tasks.api import EncoderSpec, TaskCell
from tasks.finetune import AudioClassifier, FinetuneModule, teacher_features
from tasks.recipes import FinetuneRecipe
from tasks.run import PROTOCOLS, run_task
from tasks.task_data import load_task_data
from upstream.encoders import AudioViT
from upstream.errors import AsitError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_distillation_targets_are_mixed_with_each_examples_own_lambda() -> None:
    recipe = FinetuneRecipe(task="esc50", mixup=1.0, mixup_alpha=1.0, distill={"path": "teacher.pt"})
    model = AudioClassifier(AudioViT(TINY_ENCODER), num_classes=4)
    module = FinetuneModule(model, recipe, multilabel=False, num_classes=4, teacher=np.zeros((6, 5), np.float32))
    b = 6
    x = torch.arange(1, b + 1, dtype=torch.float32)[:, None, None].expand(b, 64, 128).clone()
    carried = torch.randn(b, 5)
    torch.manual_seed(3)
    mixed, _, targets = module.augment(x, torch.arange(b) % 4, carried)
    assert mixed.shape == x.shape and targets is not None and targets.shape == carried.shape
    own, other = torch.arange(1, b + 1, dtype=torch.float32), torch.arange(b, 0, -1, dtype=torch.float32)
    lam = (mixed[:, 0, 0] - other) / (own - other)            # timm's elem mode mixes i with B-1-i
    assert not torch.allclose(lam, torch.ones(b))              # some examples really were mixed
    torch.testing.assert_close(targets, lam[:, None] * carried + (1 - lam[:, None]) * carried.flip(0))


def test_teacher_features_are_computed_once_per_teacher(corpus, tiny_encoder_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_task_data("esc50", str(corpus.esc50), fold=1)
    examples = data.train[:5]
    recipe = FinetuneRecipe(task="esc50", distill={"adapter": "asit-hear", "path": str(tiny_encoder_file)})
    cache = tmp_path / "teacher_features.npz"
    first = teacher_features(examples, recipe, 16000, cache)
    assert first.shape == (5, TINY_ENCODER.embed_dim) and np.isfinite(first).all()
    assert not np.allclose(first[0], first[1])                 # one row per clip

    def no_teacher(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the teacher ran again")
    with monkeypatch.context() as patch:
        patch.setattr(finetune, "load_teacher", no_teacher)
        np.testing.assert_array_equal(teacher_features(examples, recipe, 16000, cache), first)
    other = FinetuneRecipe(task="esc50", distill={"path": str(tiny_encoder_file), "layer": 0})
    assert not np.allclose(teacher_features(examples, other, 16000, cache), first)   # another teacher: recomputed


@pytest.mark.parametrize("distill, message", [
    ({"path": "t.pt", "temperature": 2}, r"recipe distill has unknown key\(s\) temperature"),
    ({"gamma": 1.0}, r"recipe distill.path is empty"),
    ({"path": "t.pt", "gamma": 0}, r"recipe distill.gamma must be > 0"),
])
def test_bad_distill_blocks_are_refused(distill: dict, message: str) -> None:
    with pytest.raises(AsitError, match=message):
        FinetuneRecipe(task="esc50", distill=distill)


@pytest.mark.e2e
def test_a_distilled_finetuning_cell(corpus, tiny_encoder_file: Path, tmp_path: Path) -> None:
    overrides = {"epochs": 1, "batch_size": 8, "num_workers": 0, "accelerator": "cpu", "train_frames": 64,
                 "eval_frames": 64, "warmup_epochs": 0, "log_every_n_steps": 1,
                 "distill": {"adapter": "asit-hear", "path": str(tiny_encoder_file), "gamma": 0.5}}
    cell = TaskCell(EncoderSpec("tiny", str(tiny_encoder_file)), "esc50", "finetune", PROTOCOLS["esc50"], seed=0,
                    fold=1, data_root=str(corpus.esc50), overrides=overrides)
    result = run_task(cell, tmp_path)
    assert result.extra["distill"]["gamma"] == 0.5 and 0.0 <= result.value <= 1.0
    [metrics] = list(tmp_path.rglob("metrics.csv"))
    import pandas as pd
    logged = pd.read_csv(metrics)
    assert logged["train/distill_step"].notna().any() and logged["train/task_step"].notna().any()
    [features] = list(tmp_path.rglob("teacher_features.npz"))
    with np.load(features) as stored:
        assert stored["features"].shape[1] == TINY_ENCODER.embed_dim
