"""asit_hear: the HEAR 2021 API contract, the stricter checks of heareval's GitHub validator, and the promises of
the module (thin layer over the runtime, centred timestamps, batch invariance, clear errors)."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest
import torch

import asit_hear
from asit_hear import AudioInputError
from conftest import TINY_ENCODER
from upstream.encoders import AudioViT, EncoderConfig
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig, resample
from upstream.runtime import EncoderRuntime


@pytest.fixture(scope="module")
def model(tiny_encoder_file):  # type: ignore[no-untyped-def]
    return asit_hear.load_model(str(tiny_encoder_file))


def noise(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, int(seconds * 16000), generator=g) * 2 - 1


def strict_validator_checks(model, num_audio: int, length: float) -> None:  # type: ignore[no-untyped-def]
    """What hear-validator on heareval's GitHub (stricter than PyPI's 2021.0.2) checks, its warnings as failures."""
    audio = noise(num_audio, length)
    embeddings, timestamps = asit_hear.get_timestamp_embeddings(audio, model)
    assert embeddings.dtype == torch.float32
    emb, ts = embeddings.numpy(), timestamps.numpy()
    assert emb.ndim == 3 and ts.ndim == 2
    assert emb.shape[0] == num_audio and emb.shape[:2] == ts.shape
    assert emb.shape[2] == model.timestamp_embedding_size
    assert ts.shape[1] > 1
    diff = np.diff(ts)
    avg = diff.mean()
    assert diff.max() <= 50.0                                  # validator warns above 50 ms
    assert np.abs(diff - avg).max() <= 1e-3                    # regular hop (validator: 1 ms)
    assert (diff > 0).all()                                    # monotonic
    assert ts.min() <= avg                                     # warns when timestamps start late
    end = 1000 * length
    assert ts.max() >= end - 2 * avg                           # error: no embeddings for the end
    assert ts.max() >= end - avg and ts.max() >= end - 50      # warning: same, milder
    assert ts.max() <= end                                     # error: beyond the audio


@pytest.mark.parametrize("length", [1.07, 1.98, 4.0])
def test_strict_validator_timestamp_checks(model, length: float) -> None:
    strict_validator_checks(model, num_audio=2, length=length)


def test_strict_validator_scene_checks(model) -> None:
    audio = noise(4, 2.74)
    emb = asit_hear.get_scene_embeddings(audio, model)
    assert emb.dtype == torch.float32 and emb.ndim == 2
    assert tuple(emb.shape) == (4, model.scene_embedding_size)
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    assert model.sample_rate == 16000


def test_model_is_frozen_in_eval_mode_and_deterministic(model) -> None:
    model.train()
    assert not model.training and not model.runtime.encoder.training
    audio = noise(3, 1.3, seed=1)
    first = asit_hear.get_scene_embeddings(audio, model)
    torch.testing.assert_close(asit_hear.get_scene_embeddings(audio, model), first, rtol=0, atol=0)
    assert first.std() > 0


def test_a_clip_alone_or_in_a_batch_gives_the_same_embeddings(model) -> None:
    batch = noise(5, 2.3, seed=2)
    scene = asit_hear.get_scene_embeddings(batch, model)
    stamps, times = asit_hear.get_timestamp_embeddings(batch, model)
    for i in (0, 3):
        alone = batch[i:i + 1].clone()
        torch.testing.assert_close(asit_hear.get_scene_embeddings(alone, model)[0], scene[i], rtol=0, atol=1e-5)
        one, one_times = asit_hear.get_timestamp_embeddings(alone, model)
        torch.testing.assert_close(one[0], stamps[i], rtol=0, atol=1e-5)
        torch.testing.assert_close(one_times[0], times[i])
    assert not torch.allclose(scene[0], scene[3])             # different clips, different embeddings


def test_scene_embedding_is_the_runtime_mean_of_patch_tokens(model) -> None:
    """Thin layer: the HEAR scene embedding is exactly what the shared runtime pools."""
    audio = noise(2, 3.1, seed=3)
    out = model.runtime(list(audio), layers=[-1])
    torch.testing.assert_close(asit_hear.get_scene_embeddings(audio, model), out.mean_pooled(), rtol=0, atol=0)


def test_each_timestamp_embedding_is_the_patch_column_centred_on_it(tiny_encoder_file) -> None:
    """Recompute every timestamp embedding independently with the encoder: the 16 frames whose centre is the
    timestamp, inside the chunk the shifted pass put them in, mean over the 8 frequency patches."""
    model = asit_hear.load_model(str(tiny_encoder_file), timestamp_hop_ms=40, padding="chunk")
    audio = noise(1, 1.5, seed=4)
    emb, times = asit_hear.get_timestamp_embeddings(audio, model)
    runtime: EncoderRuntime = model.runtime
    fbank = runtime.features([audio[0]])[0]                   # [T, 128]
    frame_ms = runtime.frontend.config.frame_centers_ms(fbank.shape[0] + 16)
    chunk = runtime.chunk_frames
    for k, t in enumerate(times[0].tolist()):
        shift = [s for s in model.frame_shifts if (t + 10 * s - 87.5) % 160 == 0][0]
        column = int((t + 10 * shift - 87.5) // 160)
        first = 16 * column - shift                            # first frame of that column in the original audio
        centre = float(frame_ms[first:first + 16].mean()) if first >= 0 else \
            float(frame_ms[0] + 10 * (first + 7.5))            # frames before 0 are the (zero) padding
        assert centre == pytest.approx(t)
        padded = torch.nn.functional.pad(fbank, (0, 0, shift, 0))
        start = (16 * column // chunk) * chunk
        piece = torch.nn.functional.pad(padded[start:start + chunk], (0, 0, 0, max(0, chunk - padded[start:].shape[0])))
        tokens = runtime.encoder.forward_features(piece[None, None])[0, 1:].reshape(chunk // 16, 8, -1)
        torch.testing.assert_close(emb[0, k], tokens[column - start // 16].mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seconds", [0.1, 0.5, 60.0])
def test_any_length_from_a_tenth_of_a_second_to_minutes(model, seconds: float) -> None:
    audio = noise(1, seconds, seed=5)
    emb, ts = asit_hear.get_timestamp_embeddings(audio, model)
    assert ts[0, -1] <= 1000 * seconds and ts[0, -1] >= 1000 * seconds - 2 * model.timestamp_hop_ms
    assert emb.shape[1] == ts.shape[1] >= 1 and torch.isfinite(emb).all()
    assert asit_hear.get_scene_embeddings(audio, model).shape == (1, model.scene_embedding_size)


def test_long_audio_is_chunked_so_far_away_audio_does_not_change_early_embeddings(model) -> None:
    """Chunks are encoded independently: appending 20 s after the first chunk leaves its embeddings unchanged."""
    chunk_s = model.runtime.chunk_frames / 100
    short = noise(1, 2 * chunk_s, seed=6)
    longer = torch.cat([short, noise(1, 20.0, seed=7)], dim=1)
    a, ta = asit_hear.get_timestamp_embeddings(short, model)
    b, tb = asit_hear.get_timestamp_embeddings(longer, model)
    keep = int((ta[0] < 1000 * chunk_s - 200).sum())           # away from the first chunk's edge
    torch.testing.assert_close(b[0, :keep], a[0, :keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(tb[0, :keep], ta[0, :keep])


def test_options_layers_pooling_hop_and_precision(tiny_encoder_file) -> None:
    audio = noise(2, 1.2, seed=8)
    last = asit_hear.load_model(str(tiny_encoder_file))
    both = asit_hear.load_model(str(tiny_encoder_file), layers=[1, 2])
    every = asit_hear.load_model(str(tiny_encoder_file), layers="all")
    assert both.scene_embedding_size == 2 * last.scene_embedding_size
    assert every.timestamp_embedding_size == 3 * last.timestamp_embedding_size
    torch.testing.assert_close(asit_hear.get_scene_embeddings(audio, both)[:, 64:],
                               asit_hear.get_scene_embeddings(audio, last))
    cls = asit_hear.load_model(str(tiny_encoder_file), pooling="cls")
    torch.testing.assert_close(asit_hear.get_scene_embeddings(audio, cls), last.runtime(list(audio), [-1]).cls[0])
    fine = asit_hear.load_model(str(tiny_encoder_file), timestamp_hop_ms=20)
    _, ts = asit_hear.get_timestamp_embeddings(audio, fine)
    assert torch.diff(ts).unique().tolist() == [20.0] and len(fine.frame_shifts) == 8
    bf16 = asit_hear.load_model(str(tiny_encoder_file), precision="bf16")
    out = asit_hear.get_scene_embeddings(audio, bf16)
    assert out.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(out, asit_hear.get_scene_embeddings(audio, last)).min() > 0.99
    chunked = asit_hear.load_model(str(tiny_encoder_file), chunk_frames=32)
    assert chunked.runtime.chunk_frames == 32


def test_input_types_are_converted_and_results_come_back_on_the_input_device(model) -> None:
    audio = noise(1, 1.0, seed=9)
    as64 = asit_hear.get_scene_embeddings(audio.double(), model)
    assert as64.dtype == torch.float32 and as64.device == audio.device
    torch.testing.assert_close(as64, asit_hear.get_scene_embeddings(audio, model))


@pytest.mark.parametrize("audio, message", [
    (torch.zeros(2, 2, 16000), r"shape \(2, 2, 16000\).*mono"),
    (torch.zeros(16000, dtype=torch.int16), "2 dimensions"),
    (torch.zeros(1, 16000, dtype=torch.int16), "floating point.*torch.int16"),
    (torch.zeros(1, 1, 1, 16000), "2 dimensions"),
    (torch.zeros(0, 16000), "no sounds"),
    (torch.zeros(2, 0), "0 samples"),
    (np.zeros((1, 16000), dtype=np.float32), "torch.Tensor.*ndarray"),
])
def test_bad_audio_raises_a_value_error_naming_the_problem(model, audio, message: str) -> None:
    for call in (asit_hear.get_scene_embeddings, asit_hear.get_timestamp_embeddings):
        with pytest.raises(ValueError, match=message):
            call(audio, model)


def test_nan_audio_names_the_sound() -> None:
    audio = torch.zeros(4, 8000)
    audio[2, 10] = float("nan")
    audio[3, 0] = float("inf")
    with pytest.raises(AudioInputError, match=r"NaN or infinite samples .* in sound\(s\) 2, 3 of 4"):
        asit_hear.check_audio(audio)
    loud = torch.zeros(2, 8000, dtype=torch.float64)
    loud[1, 5] = 1e39                                    # finite in float64, Inf once cast to HEAR's float32
    with pytest.raises(AudioInputError, match=r"beyond the float32 range\) in sound\(s\) 1 of 2"):
        asit_hear.check_audio(loud)


def test_checkpoint_problems_are_one_line_errors(tmp_path, tiny_encoder_file) -> None:
    cases = {
        "missing": tmp_path / "nope.pt",
        "not torch": tmp_path / "text.pt",
        "mismatch": tmp_path / "mismatch.pt",
    }
    cases["not torch"].write_text("hello")
    state = torch.load(tiny_encoder_file, weights_only=True)
    state["state_dict"]["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(state, cases["mismatch"])
    for what, path in cases.items():
        with pytest.raises(AsitError) as info:
            asit_hear.load_model(str(path))
        text = str(info.value)
        assert "\n" not in text and str(path) in text, what
    with pytest.raises(AsitError, match="needs a checkpoint"):
        asit_hear.load_model()


@pytest.mark.parametrize("options, message", [
    ({"layer": 3}, "load_model: unknown config key.*layer; valid keys.*layers"),
    ({"layers": 7}, "layer 7 out of range"),
    ({"layers": "some"}, "layers must be"),
    ({"layers": [1, 1]}, "twice"),
    ({"pooling": "median"}, r"pooling must be one of mean, max, mean\+max, mean\+std, cls, mean\+cls"),
    ({"timestamp_hop_ms": 30}, r"timestamp_hop_ms 30 must be one of \[10, 20, 40, 80, 160\]"),
    ({"precision": "fp8"}, "precision must be"),
    ({"chunk_frames": 40}, "multiple of 16"),
])
def test_bad_options_are_one_line_errors(tiny_encoder_file, options, message: str) -> None:
    with pytest.raises(AsitError, match=message):
        asit_hear.load_model(str(tiny_encoder_file), **options)


def test_official_asit_checkpoint_runs_at_16k_with_its_32k_frontend(tmp_path) -> None:
    """Official checkpoints compute their fbank at 32 kHz: HEAR audio (16 kHz) is resampled to it inside; the
    frontend_sample_rate option picks another rate (the paper's 16 kHz)."""
    torch.manual_seed(1)
    encoder = AudioViT(EncoderConfig(size="tiny", embed_dim=128, depth=1, num_heads=2, trained_frames=64,
                                     drop_path_rate=0.0)).eval()
    backbone = {f"backbone.{k}": v for k, v in encoder.state_dict().items()}
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": backbone, "student": {f"module.{k}": v for k, v in backbone.items()}, "epoch": 3,
                "args": argparse.Namespace(arch="vit_tiny")}, path)
    model = asit_hear.load_model(str(path))
    assert model.sample_rate == 16000 and model.runtime.sample_rate == 32000
    audio = noise(2, 1.0, seed=10)
    expected = EncoderRuntime(encoder, FrontendConfig(sample_rate=32000, pad_with="silence"))(
        list(resample(audio, 16000, 32000)), [-1])
    torch.testing.assert_close(asit_hear.get_scene_embeddings(audio, model), expected.mean_pooled(),
                               rtol=1e-5, atol=1e-5)
    at16 = asit_hear.load_model(str(path), frontend_sample_rate=16000)
    assert at16.runtime.sample_rate == 16000
    strict_validator_checks(at16, 2, 1.07)
    strict_validator_checks(model, 2, 1.07)


def test_tiny_encoder_file_is_what_the_fixture_says(tiny_encoder_file) -> None:
    model = asit_hear.load_model(str(tiny_encoder_file))
    assert model.runtime.embed_dim == TINY_ENCODER.embed_dim and model.runtime.chunk_frames == 64


def test_no_warnings_from_the_api(model) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asit_hear.get_timestamp_embeddings(noise(1, 1.0), model)
        asit_hear.get_scene_embeddings(noise(1, 1.0), model)
