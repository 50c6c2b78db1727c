from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from upstream.errors import AsitError
from upstream.frontend import DATASET_STATS, Frontend, FrontendConfig, load_audio, pad_or_crop, resample, to_mono


def _wave(seconds: float = 1.0, sr: int = 16000) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    t = torch.arange(int(sr * seconds)) / sr
    return 0.5 * torch.sin(2 * torch.pi * 440 * t) + 0.1 * torch.randn(t.shape, generator=g) + 0.2


def test_fbank_equals_torchaudio_kaldi_fbank() -> None:
    wave = _wave()
    ours = Frontend().fbank(wave)
    expected = torchaudio.compliance.kaldi.fbank(
        (wave - wave.mean()).unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)
    assert ours.shape == (98, 128)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_normalisation_uses_dataset_stats_and_double_std() -> None:
    cfg = FrontendConfig().with_stats("esc50")
    assert (cfg.mean, cfg.std) == DATASET_STATS["esc50"] == (-6.627, 5.358)
    fe = Frontend(cfg)
    wave = _wave()
    torch.testing.assert_close(fe(wave), (fe.fbank(wave) + 6.627) / (2 * 5.358))


def test_custom_stats_need_mean_and_std() -> None:
    with pytest.raises(AsitError, match="frontend.stats 'mine'"):
        FrontendConfig(stats="mine")
    assert FrontendConfig(stats="mine", mean=1.0, std=2.0).mean == 1.0


def test_frame_count_and_centres_follow_kaldi_snip_edges() -> None:
    cfg = FrontendConfig()
    for samples in (400, 1600, 16000, 16159, 16160):
        assert Frontend(cfg).fbank(_wave(2.0)[:samples]).shape[0] == cfg.num_frames(samples)
    centres = cfg.frame_centers_ms(3)
    assert centres.tolist() == [12.5, 22.5, 32.5]


def test_clip_shorter_than_a_window_still_gives_one_frame() -> None:
    assert Frontend().fbank(_wave(0.01)).shape == (1, 128)


def test_load_audio_mono_resample(tmp_path) -> None:
    stereo = np.stack([np.full(4410, 0.5), np.full(4410, -0.25)], axis=1).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    wave, sr = load_audio(path)
    assert sr == 44100 and wave.shape == (2, 4410)
    mono = to_mono(wave)
    torch.testing.assert_close(mono, torch.full((4410,), 0.125))
    assert resample(mono, 44100, 16000).shape == (1600,)
    assert Frontend().load(path).shape == (1600,)


def test_unreadable_audio_names_the_file(tmp_path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(AsitError, match="broken.wav"):
        load_audio(bad)
    with pytest.raises(AsitError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")


def test_pad_or_crop() -> None:
    x = torch.arange(10.0).reshape(5, 2)
    assert pad_or_crop(x, 3, 1).tolist() == [[2, 3], [4, 5], [6, 7]]
    padded = pad_or_crop(x, 7)
    assert padded[:5].equal(x) and padded[5:].abs().sum() == 0
