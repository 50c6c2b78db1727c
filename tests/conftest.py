"""Shared fixtures: tiny models and small generated audio, so every test runs in seconds on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from threadpoolctl import threadpool_limits

import upstream.precision
from upstream.encoders import AudioViT, ConformerConfig, EncoderConfig, build_encoder

TINY_ENCODER = EncoderConfig(size="tiny", embed_dim=64, depth=2, num_heads=2, trained_frames=64, drop_path_rate=0.0)
# a 2-block, 32-dim conformer on 64-bin, 64/20 ms fbank (1.28 s chunks)
TINY_CONFORMER = ConformerConfig(size="tiny", embed_dim=32, depth=2, num_heads=2, ffn_dim=64, latent_dim=32,
                                 first_kernel_size=7, kernel_size=5, trained_frames=64, dropout=0.0)

# a 2-block, 64-dim ASiT on 0.64 s crops: enough to exercise every code path in a few seconds
TINY_PRETRAIN_OVERRIDES = [
    "encoder.size=tiny", "encoder.embed_dim=64", "encoder.depth=2", "encoder.num_heads=2",
    "encoder.trained_frames=64", "encoder.drop_path_rate=0.1", "data.crop_frames=64", "data.batch_size=4",
    "data.num_workers=0", "objective.out_dim=64", "objective.head_hidden_dim=64",
    "objective.head_bottleneck_dim=32", "objective.recon_hidden_dim=64", "objective.recon_bottleneck_dim=32",
    "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true",
    "trainer.enable_progress_bar=false", "optim.warmup_epochs=1",
]


@pytest.fixture(scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """Tiny models on seconds of audio: one intra-op thread (torch and BLAS) is as fast alone and far faster when
    other test runs share the 2 cores (OpenMP threads then spin against each other: 1 ms fbanks become 100 ms).
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _deterministic_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _auto_precision_is_fp32(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """`precision: auto` resolves to fp32 in this process whatever the CPU, so a test's numbers do not depend on
    whether the machine has AMX; tests of `auto` set the capability themselves. Subprocesses see the real CPU: a
    test comparing with one is marked `native_precision`."""
    if request.node.get_closest_marker("native_precision") is None:
        monkeypatch.setattr(upstream.precision, "_cpu_has_fast_bf16", lambda: False)


@pytest.fixture()
def tiny_encoder() -> AudioViT:
    torch.manual_seed(0)
    return AudioViT(TINY_ENCODER).eval()


def write_tone_clips(folder: Path, count: int, seed: int = 0, sample_rate: int = 16000,
                     seconds: tuple[float, float] = (0.5, 1.5)) -> list[Path]:
    """Sine + noise clips of random pitch and length (mono, 16-bit)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        n = int(sample_rate * rng.uniform(*seconds))
        t = np.arange(n) / sample_rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 3000) * t) + 0.03 * rng.standard_normal(n)
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, wave.astype(np.float32), sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def write_scored_hear_task(task: Path, accuracy: float = 0.5, **fold_fields: float) -> Path:
    """An ESC-50 task folder as heareval's predictions runner leaves it (task_metadata.json and
    test.predicted-scores.json, five presplit folds scored `accuracy`, plus `fold_fields` per fold)."""
    task.mkdir(parents=True)
    (task / "task_metadata.json").write_text(json.dumps(
        {"task_name": "esc50", "split_mode": "presplit_kfold", "splits": [f"fold{i:02d}" for i in range(5)],
         "evaluation": ["top1_acc"]}))
    (task / "test.predicted-scores.json").write_text(json.dumps(
        {f"fold{i:02d}": {"test_top1_acc": accuracy, "test_score": accuracy, **fold_fields} for i in range(5)}))
    return task


@pytest.fixture(scope="session")
def tone_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tones")
    write_tone_clips(folder, 8)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported (randomly initialised) tiny encoder: for plumbing tests that need a checkpoint file."""
    from upstream.checkpoint import save_encoder
    from upstream.frontend import FrontendConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encoder") / "tiny_encoder.pt"
    return save_encoder(path, AudioViT(TINY_ENCODER).eval(), FrontendConfig(), {"note": "random init, tests"})


@pytest.fixture(scope="session")
def tiny_conformer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported (randomly initialised) tiny conformer with its own frontend statistics."""
    from upstream.checkpoint import save_encoder
    from upstream.frontend import FrontendConfig

    torch.manual_seed(0)
    frontend = FrontendConfig(num_mel_bins=64, frame_length_ms=64, frame_shift_ms=20, stats="estimate", mean=-6.0,
                              std=4.0)
    path = tmp_path_factory.mktemp("conformer") / "tiny_conformer.pt"
    return save_encoder(path, build_encoder(TINY_CONFORMER).eval(), frontend, {"note": "random init, tests"})


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """The embedded default corpus (seed 0) in the real dataset layouts, generated once per session (≈10 s)."""
    from tasks.corpus import generate_corpus

    return generate_corpus(tmp_path_factory.mktemp("corpus") / "corpus", seed=0)
