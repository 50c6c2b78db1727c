"""Official ASiT checkpoints through the runtime against a reference of the official input pipeline.

The reference is written from the pipeline's facts (docs/checkpoints.md), not from its code: waveform read at
32 kHz, zero-padded to `secs_per_crop` = 6 s, mean removed, Kaldi fbank (htk_compat, hanning, 128 bins, 25/10 ms, no
dither, no energy), frames padded/cropped to `num_frames` = 592, normalised as (x - mean) / (2 std), then a plain
timm VisionTransformer with the checkpoint's backbone. Clips longer than one window are windows of 592 frames
(the official pipeline sees one such crop per clip); the harness averages their CLS tokens weighted by the frames of
audio each holds.
"""

from __future__ import annotations

import argparse
import math

import pytest
import timm
import torch
import torchaudio
from torch import nn

from upstream.checkpoint import load_encoder
from upstream.encoders import AudioViT, EncoderConfig
from upstream.errors import AsitError
from upstream.frontend import Frontend, FrontendConfig
from upstream.runtime import EncoderRuntime, RuntimeOptions

RATE, SECS, FRAMES, HOP = 32000, 6, 592, 320
MEAN, STD = -4.2677393, 4.5689974
CONFIG = EncoderConfig(size="tiny", embed_dim=64, depth=2, num_heads=2, trained_frames=FRAMES, drop_path_rate=0.0)


def official_file(tmp_path, backbone: dict[str, torch.Tensor], **args) -> str:
    """A checkpoint in the layout of the official main_ASiT.py (student under DDP's `module.`, plain teacher)."""
    path = tmp_path / "checkpoint.pth"
    args = {"data_mean": MEAN, "data_std": STD, "num_mel_bins": 128, "num_frames": FRAMES, "secs_per_crop": SECS,
            **args}
    torch.save({"student": {f"module.backbone.{k}": v for k, v in backbone.items()},
                "teacher": {f"backbone.{k}": v for k, v in backbone.items()},
                "epoch": 99, "args": argparse.Namespace(**args)}, path)
    return str(path)


@pytest.fixture(scope="module")
def backbone() -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    encoder = AudioViT(CONFIG)
    with torch.no_grad():                        # trained-looking positional / class tokens, not timm's tiny init
        encoder.pos_embed.normal_(0, 0.5)
        encoder.cls_token.normal_(0, 0.5)
    return {k: v.clone() for k, v in encoder.state_dict().items()}


def reference_window(window: torch.Tensor) -> torch.Tensor:
    """One window of 32 kHz audio -> the official normalised input [1, 1, 592, 128]."""
    if window.numel() < RATE * SECS:
        window = torch.cat([window, torch.zeros(RATE * SECS - window.numel())])
    window = window - window.mean()
    fbank = torchaudio.compliance.kaldi.fbank(window[None], htk_compat=True, sample_frequency=RATE,
                                              use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
                                              frame_shift=10)
    fbank = nn.functional.pad(fbank, (0, 0, 0, max(0, FRAMES - fbank.shape[0])))[:FRAMES]
    return ((fbank - MEAN) / (2 * STD))[None, None]


def reference(wave: torch.Tensor, backbone: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(frame-weighted CLS [D], token grid of the frames holding audio [columns, 8·D]) of a 32 kHz clip."""
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=(FRAMES, 128), patch_size=16, in_chans=1, embed_dim=64, depth=2, num_heads=2, qkv_bias=True,
        num_classes=0, global_pool="").eval()
    vit.load_state_dict(backbone)
    frames = 1 + (max(wave.numel(), 800) - 800) // HOP
    cls, grids, weights = [], [], []
    with torch.no_grad():
        for start in range(0, frames, FRAMES):
            tokens = vit.forward_features(reference_window(wave[start * HOP:]))[0]
            cls.append(tokens[0])
            grids.append(tokens[1:].reshape(FRAMES // 16, -1))
            weights.append(min(FRAMES, frames - start))
    w = torch.tensor(weights, dtype=torch.float32)
    columns = math.ceil(frames / 16)
    return (torch.stack(cls) * w[:, None]).sum(0) / w.sum(), torch.cat(grids)[:columns]


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return 1.0 - float(nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


@pytest.mark.parametrize("seconds", [1.0, 3.0, 6.0, 10.0])
def test_official_checkpoint_matches_the_official_pipeline(tmp_path, backbone, seconds: float) -> None:
    loaded = load_encoder(official_file(tmp_path, backbone))
    assert (loaded.frontend.sample_rate, loaded.frontend.pad_with) == (RATE, "silence")
    # with a DC offset: the official pipeline pads the raw waveform, so the frames straddling the end see the offset
    wave = 0.1 * torch.randn(int(seconds * RATE), generator=torch.Generator().manual_seed(int(seconds))) + 0.05
    expected_cls, expected_grid = reference(wave, backbone)
    runtime = EncoderRuntime(loaded.encoder, loaded.frontend, RuntimeOptions(pooling="cls", columns="concat",
                                                                                  padding="chunk"))
    (laid_out,), (frames,) = runtime.laid_out([wave])
    for start in range(0, frames, FRAMES):           # every input frame, the straddling ones included
        torch.testing.assert_close(laid_out[start:start + FRAMES], reference_window(wave[start * HOP:])[0, 0],
                                   atol=1e-3, rtol=0)
    out = runtime([wave], layers=[-1])
    assert cosine_distance(out.scene(-1, "cls")[0], expected_cls) < 1e-4
    assert cosine_distance(out.hidden_states[0][0], expected_grid) < 1e-4
    if seconds < SECS:      # padding the normalised fbank with the mean (0), as before, is 100x further off
        mean_padded = EncoderRuntime(loaded.encoder, FrontendConfig(sample_rate=RATE, stats="custom", mean=MEAN,
                                                                    std=STD), runtime.options)
        other = mean_padded([wave], layers=[-1])
        assert cosine_distance(other.hidden_states[0][0], expected_grid) > 5e-3


def test_silence_padding_is_the_fbank_of_a_zero_padded_waveform() -> None:
    config = FrontendConfig(sample_rate=RATE, stats="custom", mean=MEAN, std=STD, pad_with="silence")
    frontend = Frontend(config)
    wave = torch.randn(RATE)                                    # 1 s: 98 frames
    natural = frontend(wave)
    padded = frontend.padded(wave, 200)
    assert natural.shape[0] == config.num_frames(RATE) == 98 and padded.shape == (200, 128)
    torch.testing.assert_close(padded[:98], natural, atol=1e-4, rtol=1e-4)     # log of tiny energies: rounding
    straddling = math.ceil((config.window_samples - config.hop_samples) / config.hop_samples)
    assert not torch.allclose(padded[98:98 + straddling], torch.full((straddling, 128), config.pad_value))
    assert torch.equal(padded[98 + straddling:], torch.full((200 - 98 - straddling, 128), config.pad_value))
    assert config.pad_value == pytest.approx((math.log(torch.finfo(torch.float32).eps) - MEAN) / (2 * STD))
    assert config.pad_value == pytest.approx(-1.2775, abs=1e-3)
    mean_padded = Frontend(FrontendConfig(sample_rate=RATE, stats="custom", mean=MEAN, std=STD)).padded(wave, 200)
    assert torch.equal(mean_padded[:98], natural) and not mean_padded[98:].any()
    # padding in front (HEAR's shifted timestamp passes): zero samples before the waveform, or rows of the mean
    shifted = frontend.padded(wave + 0.3, 200, before=5)
    reference = frontend(torch.cat([torch.zeros(5 * config.hop_samples), wave + 0.3]))
    assert shifted.shape == (200, 128)
    torch.testing.assert_close(shifted[:103], reference, atol=1e-4, rtol=1e-4)
    front = Frontend(FrontendConfig(sample_rate=RATE, stats="custom", mean=MEAN, std=STD)).padded(wave, 200, before=5)
    assert not front[:5].any() and torch.equal(front[5:103], natural)


def test_the_padding_rule_travels_in_exports(tmp_path, backbone) -> None:
    from upstream.checkpoint import save_encoder
    loaded = load_encoder(official_file(tmp_path, backbone))
    again = load_encoder(save_encoder(tmp_path / "export.pt", loaded.encoder, loaded.frontend))
    assert again.frontend == loaded.frontend and again.frontend.pad_with == "silence"


def test_mel_bins_and_frames_come_from_the_checkpoints_args(tmp_path) -> None:
    torch.manual_seed(0)
    wide = AudioViT(EncoderConfig(size="tiny", embed_dim=64, depth=1, num_heads=2, num_mel_bins=64,
                                  trained_frames=1184, drop_path_rate=0.0)).state_dict()
    loaded = load_encoder(official_file(tmp_path, wide, num_mel_bins=64, num_frames=1184))
    assert (loaded.encoder.config.num_mel_bins, loaded.encoder.config.trained_frames) == (64, 1184)
    assert loaded.frontend.num_mel_bins == 64
    # the same positions read as 592 x 128 when the args say so are refused, not loaded silently
    with pytest.raises(AsitError, match=r"checkpoint\.pth: pos_embed holds 296 patch positions = 592 frames x 128 "
                                        r"mel bins, not the 1184 x 128 of its args"):
        load_encoder(official_file(tmp_path, wide, num_mel_bins=128, num_frames=1184))
    narrow = AudioViT(EncoderConfig(size="tiny", embed_dim=64, depth=1, num_heads=2, num_mel_bins=64,
                                    trained_frames=592, drop_path_rate=0.0)).state_dict()
    with pytest.raises(AsitError, match="pos_embed holds 148 patch positions, which is no whole number of time rows "
                                        "of 128 mel bins"):
        load_encoder(official_file(tmp_path, narrow, num_mel_bins=128, num_frames=592))
    with pytest.raises(AsitError, match=r"args\.num_mel_bins must be a positive integer, got 'x'"):
        load_encoder(official_file(tmp_path, narrow, num_mel_bins="x"))


def test_non_finite_weights_and_statistics_are_refused(tmp_path, backbone) -> None:
    broken = dict(backbone)
    broken["blocks.1.mlp.fc1.weight"] = broken["blocks.1.mlp.fc1.weight"].clone()
    broken["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    with pytest.raises(AsitError, match=r"checkpoint\.pth holds NaN or Inf in blocks\.1\.mlp\.fc1\.weight$"):
        load_encoder(official_file(tmp_path, broken))
    for std in (float("nan"), 0.0, -1.0):
        with pytest.raises(AsitError, match=r"checkpoint\.pth: its args give no usable fbank statistics"):
            load_encoder(official_file(tmp_path, backbone, data_std=std))
    with pytest.raises(AsitError, match="frontend.mean must be a finite number, got inf"):
        FrontendConfig(stats="custom", mean=float("inf"), std=1.0)
    with pytest.raises(AsitError, match="frontend.sample_rate must be a positive number of Hz, got 0"):
        load_encoder(official_file(tmp_path, backbone), sample_rate=0)


def test_audio_beyond_the_float32_range_is_refused_not_turned_into_inf(tmp_path) -> None:
    frontend = Frontend(FrontendConfig())
    loud = torch.zeros(16000, dtype=torch.float64)
    loud[5] = 1e39
    with pytest.raises(AsitError, match=r"not finite in float32 \(NaN, Inf or beyond ±3\.4e38\)"):
        frontend(loud)


def test_a_directory_is_not_a_checkpoint(tmp_path, backbone) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run / "encoder.pt").write_bytes(b"x")
    with pytest.raises(AsitError, match=r"checkpoint .*run is a directory, not a file \(it holds encoder\.pt, "
                                        r"checkpoints/last\.ckpt\)"):
        load_encoder(run)
