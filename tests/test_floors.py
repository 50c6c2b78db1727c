"""Floors: the fbank_stats encoder is the per-band fbank mean + std, the probe reproduces an independent
scikit-learn computation of that floor, and `asit export` writes both floors of a checkpoint."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut, PredefinedSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tasks.api import EncoderSpec, TaskCell
from tasks.corpus import CorpusPaths
from tasks.run import PROTOCOLS, run_task
from tasks.task_data import load_task_data
from upstream.checkpoint import load_encoder
from upstream.cli import main
from upstream.encoders import FbankStatsConfig, build_encoder
from upstream.errors import AsitError
from upstream.floors import initialised
from upstream.frontend import FrontendConfig
from upstream.runtime import EncoderRuntime, RuntimeOptions, load_runtime

pytestmark = pytest.mark.usefixtures("one_torch_thread")
C_GRID = [0.01, 0.1, 1.0, 10.0]


def test_fbank_stats_scene_vector_is_the_per_band_mean_and_std() -> None:
    frontend = FrontendConfig(sample_rate=16000)
    runtime = EncoderRuntime(build_encoder(FbankStatsConfig()), frontend, RuntimeOptions(pooling="mean+std",
                                                                                         chunk_frames=100))
    waves = [torch.randn(16000 * 3), torch.randn(4000) * 0.1]          # 298 frames in 3 chunks, 23 frames in one
    out = runtime(waves)
    assert out.layers == [0] and out.num_columns.tolist() == [298, 23]
    for wave, scene in zip(waves, out.scene(-1, "mean+std")):
        fbank = runtime.frontend(wave).numpy()
        np.testing.assert_allclose(scene.numpy(), np.concatenate([fbank.mean(0), fbank.std(0)]), atol=1e-4)
    np.testing.assert_allclose(out.hidden_states[0][0, :298].numpy(), runtime.frontend(waves[0]).numpy(), atol=1e-6)
    with pytest.raises(AsitError, match="depth of fbank_stats is 0"):
        build_encoder({"arch": "fbank_stats", "depth": 2})


@functools.lru_cache(maxsize=None)
def _floor_row(path: Path) -> np.ndarray:
    """Per-band mean and std of the raw Kaldi fbank (128 mel, 25/10 ms, 16 kHz), computed without the project."""
    audio, rate = sf.read(str(path), dtype="float32")
    wave = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000)
    fbank = torchaudio.compliance.kaldi.fbank((wave - wave.mean())[None], sample_frequency=16000, num_mel_bins=128,
                                              htk_compat=True, use_energy=False, window_type="hanning",
                                              dither=0.0).numpy()
    return np.concatenate([fbank.mean(0), fbank.std(0)])


def _independent_floor_features(paths: list[Path]) -> np.ndarray:
    return np.stack([_floor_row(path) for path in paths])


def _independent_floor(task: str, root: Path, fold: int | None) -> float:
    """scikit-learn alone: standardise + logistic regression, C by GridSearchCV (leave-one-training-fold-out for
    ESC-50, the valid split otherwise), refit on every labelled clip, accuracy on test."""
    data = load_task_data(task, root, fold=fold)
    labelled = data.train + data.valid
    x, y = _independent_floor_features([e.path for e in labelled]), data.targets(labelled)
    if data.valid:
        cv = PredefinedSplit([-1] * len(data.train) + [0] * len(data.valid))
        groups = None
    else:
        cv, groups = LeaveOneGroupOut(), [e.fold for e in labelled]
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)),
                          {"logisticregression__C": C_GRID}, cv=cv, scoring="accuracy", refit=True)
    search.fit(x, y, groups=groups)
    test = _independent_floor_features([e.path for e in data.test])
    return float((search.predict(test) == data.targets(data.test)).mean())


@pytest.mark.e2e
@pytest.mark.parametrize("task", ["esc50", "voxceleb1"])
def test_the_probe_on_fbank_stats_reproduces_an_independent_floor(task: str, corpus: CorpusPaths,
                                                                   tiny_encoder_file: Path, tmp_path: Path) -> None:
    root = corpus.esc50 if task == "esc50" else corpus.voxceleb1
    folds = [1, 2, 3, 4, 5] if task == "esc50" else [None]
    ours, theirs = [], []
    for fold in folds:
        cell = TaskCell(EncoderSpec("floor", str(tiny_encoder_file), "fbank_stats"), task, "probe", PROTOCOLS[task],
                        fold=fold, data_root=str(root),
                        overrides={"num_workers": 0, "n_jobs": 1, "pooling": "mean+std", "C": C_GRID,
                                   "cache_dir": str(tmp_path / "cache")})
        result = run_task(cell, tmp_path / f"fold{fold}")
        assert result.extra["encoder_arch"] == "fbank_stats" and result.extra["init"] == "fbank_stats"
        assert result.extra["embedding_dim"] == 256 and result.extra["layer"] == 0
        ours.append(result.value)
        theirs.append(_independent_floor(task, root, fold))
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.02, (ours, theirs)


def test_export_writes_both_floors_of_a_checkpoint(tiny_encoder_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for name, args in (("s3.pt", ["--scratch", "--seed", "3"]), ("s3b.pt", ["--init", "scratch", "--seed", "3"]),
                       ("s4.pt", ["--scratch", "--seed", "4"]), ("fb.pt", ["--init", "fbank_stats"])):
        assert main(["export", str(tiny_encoder_file), str(tmp_path / name), *args]) == 0
    assert "floor: fbank_stats" in capsys.readouterr().out
    original = load_encoder(tiny_encoder_file)
    s3, s3b, s4 = (load_encoder(tmp_path / n) for n in ("s3.pt", "s3b.pt", "s4.pt"))
    assert s3.meta["init"] == "scratch" and s3.meta["init_seed"] == 3
    assert s3.encoder.config == original.encoder.config and s3.frontend == original.frontend
    weights = [dict(e.encoder.state_dict())["blocks.0.attn.qkv.weight"] for e in (original, s3, s3b, s4)]
    assert torch.equal(weights[1], weights[2]), "the same seed draws the same twin"
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[3])
    # the twin is the one a probe cell with init=scratch builds from the same seed
    assert torch.equal(weights[1], dict(initialised(original.encoder, "scratch", 3).state_dict())[
        "blocks.0.attn.qkv.weight"])
    floor = load_runtime(str(tmp_path / "fb.pt"), RuntimeOptions(pooling="mean+std"))
    assert floor.encoder.arch == "fbank_stats" and floor.frontend.config == original.frontend
    wave = torch.randn(8000)
    np.testing.assert_allclose(floor([wave]).hidden_states[0][0].numpy(), floor.frontend(wave).numpy(), atol=1e-6)
