"""Frozen teachers (upstream/teachers.py): adapters over local files, and alignment onto the student's patch grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from upstream.checkpoint import load_encoder
from upstream.errors import AsitError
from upstream.frontend import Frontend
from upstream.teachers import TeacherConfig, TeacherOutput, align_to_grid, load_teacher


def test_same_grid_is_the_identity() -> None:
    tokens = torch.randn(2, 12 * 8, 5)
    assert align_to_grid(TeacherOutput(tokens, (12, 8)), (12, 8)) is tokens


def test_finer_teacher_grid_is_averaged_over_each_student_patch() -> None:
    b, c = 2, 3
    fmap = torch.randn(b, 8, 4, c)                       # teacher: 8 time × 4 freq cells, time-major
    aligned = align_to_grid(TeacherOutput(fmap.reshape(b, 32, c), (8, 4)), (4, 2))
    assert aligned.shape == (b, 8, c)
    expected = fmap.reshape(b, 4, 2, 2, 2, c).mean(dim=(2, 4))   # 2×2 teacher cells per student patch
    torch.testing.assert_close(aligned, expected.reshape(b, 8, c))


def test_off_grid_teacher_is_resampled_and_keeps_a_constant_map_constant() -> None:
    tokens = torch.full((1, 7 * 3, 4), 2.5)
    aligned = align_to_grid(TeacherOutput(tokens, (7, 3)), (4, 8))
    assert aligned.shape == (1, 32, 4)
    torch.testing.assert_close(aligned, torch.full_like(aligned, 2.5))


def test_time_sequence_is_pooled_per_column_and_repeated_over_frequency() -> None:
    seq = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1).repeat(1, 1, 2)   # [1, T'=8, C=2]
    aligned = align_to_grid(TeacherOutput(seq, None), (4, 3)).reshape(1, 4, 3, 2)
    torch.testing.assert_close(aligned[0, :, 0, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))
    assert (aligned == aligned[:, :, :1]).all()          # no frequency resolution: every frequency patch alike


def test_token_count_must_match_the_grid() -> None:
    with pytest.raises(AsitError, match=r"teacher grid \(3, 3\) does not match its 8 tokens"):
        align_to_grid(TeacherOutput(torch.zeros(1, 8, 2), (3, 3)), (3, 3))


@pytest.mark.parametrize("config, message", [
    (TeacherConfig(adapter="beats", path="x.pt"), r"teacher.adapter 'beats' unknown; available: asit-hear"),
    (TeacherConfig(path=""), r"teacher.path is empty: the asit-hear teacher needs a local model file"),
    (TeacherConfig(path="/nonexistent/clap.pt"), r"teacher.path /nonexistent/clap.pt does not exist \(asit-hear"),
    (TeacherConfig(adapter="hear", module="no_such_hear_module"), r"teacher.module 'no_such_hear_module' cannot"),
])
def test_bad_teacher_configs_are_one_line_errors(config: TeacherConfig, message: str) -> None:
    with pytest.raises(AsitError, match=message):
        load_teacher(config, 16000)


def test_a_corrupt_teacher_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AsitError, match=str(bad)):
        load_teacher(TeacherConfig(path=str(bad)), 16000)


def _waves(batch: int, seconds: float, rate: int = 16000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(batch, int(seconds * rate), generator=gen)


def test_encoder_teacher_gives_the_encoders_own_tokens_and_stays_frozen(tiny_encoder_file: Path) -> None:
    teacher = load_teacher(TeacherConfig(path=str(tiny_encoder_file)), 16000)
    teacher.train()                                          # what Lightning does at fit start
    assert not teacher.training and not teacher.encoder.training
    assert not any(p.requires_grad for p in teacher.parameters())
    waves = _waves(2, 0.655)                                 # 64 frames at 25/10 ms
    out = teacher(waves)
    assert out.grid == (4, 8) and out.tokens.shape == (2, 32, teacher.dim)
    loaded = load_encoder(tiny_encoder_file)
    fbank = torch.stack([Frontend(loaded.frontend)(w) for w in waves])
    with torch.no_grad():
        final = loaded.encoder.forward_steps(fbank).steps[-1]
    torch.testing.assert_close(out.tokens, final.reshape(2, 32, -1))
    embeddings = load_teacher(TeacherConfig(path=str(tiny_encoder_file), layer=0), 16000)(waves).tokens
    assert not torch.allclose(embeddings, out.tokens)        # layer 0 = patch embeddings, not the final output


def test_teacher_layer_out_of_range(tiny_encoder_file: Path) -> None:
    with pytest.raises(AsitError, match=r"teacher.layer 7 is outside 0..2"):
        load_teacher(TeacherConfig(path=str(tiny_encoder_file), layer=7), 16000)


def test_hear_module_teacher_reads_timestamp_embeddings(tiny_encoder_file: Path) -> None:
    """Any HEAR 2021 module: here the project's own (`asit_hear`) over the tiny export."""
    teacher = load_teacher(TeacherConfig(adapter="hear", module="asit_hear", path=str(tiny_encoder_file)), 16000)
    out = teacher(_waves(2, 1.0))
    assert out.grid is None and out.tokens.ndim == 3 and out.tokens.shape[-1] == teacher.dim
    aligned = align_to_grid(out, (6, 8))
    assert aligned.shape == (2, 48, teacher.dim) and torch.isfinite(aligned).all()


def test_hf_clap_teacher_from_a_local_directory(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ClapAudioConfig(
        hidden_size=32, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[2, 2], window_size=4,
        spec_size=128, num_mel_bins=32, patch_size=4, patch_stride=(4, 4), enable_fusion=False, projection_dim=16)
    torch.manual_seed(0)
    transformers.ClapAudioModel(config).save_pretrained(tmp_path)
    transformers.ClapFeatureExtractor(feature_size=32, sampling_rate=48000, max_length_s=2, fft_window_size=1024,
                                      hop_length=480).save_pretrained(tmp_path)
    teacher = load_teacher(TeacherConfig(adapter="hf-clap", path=str(tmp_path)), 16000)
    assert not any(p.requires_grad for p in teacher.parameters())
    out = teacher(_waves(2, 1.0))                           # half of the 2 s the CLAP pads to: half its columns
    t, f = out.grid  # type: ignore[misc]
    assert out.tokens.shape == (2, t * f, teacher.dim) and teacher.dim == 16 and t == 32 and f == 4
    np.testing.assert_allclose(out.tokens.numpy(), teacher(_waves(2, 1.0)).tokens.numpy())   # deterministic
    longer = teacher(_waves(1, 2.5))                         # beyond max_length_s: the last column is repeated
    assert longer.grid == (80, 4)
    grid = longer.tokens.reshape(1, 80, 4, -1)
    assert torch.equal(grid[:, 64:], grid[:, 63:64].expand(1, 16, 4, grid.shape[-1]))
    with pytest.raises(AsitError, match="not a transformers CLAP model directory"):
        load_teacher(TeacherConfig(adapter="hf-clap", path=str(tmp_path / "..")), 16000)
