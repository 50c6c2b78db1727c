from __future__ import annotations

import pytest
import torch

from upstream.encoders import AudioViT, EncoderConfig
from upstream.errors import AsitError

from conftest import TINY_ENCODER


def _positional_part(model: AudioViT, frames: int) -> torch.Tensor:
    """The positional embedding timm adds for an input of `frames` frames (zero patch tokens in, NHWC)."""
    zeros = torch.zeros(1, frames // 16, 8, model.embed_dim)
    with torch.no_grad():
        return model._pos_embed(zeros)[0, 1:]


def test_sizes_follow_vit_presets() -> None:
    assert EncoderConfig(size="small").resolved().embed_dim == 384
    assert EncoderConfig(size="base").resolved().num_heads == 12
    with pytest.raises(AsitError, match="encoder.size 'huge'"):
        EncoderConfig(size="huge").resolved()


def test_positional_embedding_at_trained_length_is_the_original_grid(tiny_encoder: AudioViT) -> None:
    pos = _positional_part(tiny_encoder, 64)
    assert torch.equal(pos, tiny_encoder.pos_embed[0, 1:])


def test_shorter_inputs_take_the_positions_they_cover_longer_ones_are_resampled(tiny_encoder: AudioViT) -> None:
    with torch.no_grad():
        tiny_encoder.pos_embed.copy_(torch.randn_like(tiny_encoder.pos_embed))
    grid = tiny_encoder.pos_embed[0, 1:].reshape(4, 8, -1)        # [time 4, freq 8, D]
    longer = _positional_part(tiny_encoder, 128).reshape(8, 8, -1)
    shorter = _positional_part(tiny_encoder, 32).reshape(2, 8, -1)
    assert longer.shape[0] == 8
    assert torch.equal(shorter, grid[:2])                          # the first two time rows, not a resampling
    with torch.no_grad():
        cls = tiny_encoder._pos_embed(torch.zeros(1, 2, 8, tiny_encoder.embed_dim))[0, 0]
    torch.testing.assert_close(cls, (tiny_encoder.cls_token + tiny_encoder.pos_embed[:, :1])[0, 0])
    # interpolation runs along time; a time-constant grid must stay constant after resampling
    with torch.no_grad():
        tiny_encoder.pos_embed[0, 1:].copy_(grid[:1].expand(4, 8, -1).reshape(32, -1))
    const = _positional_part(tiny_encoder, 128).reshape(8, 8, -1)
    torch.testing.assert_close(const, grid[:1].expand(8, 8, -1), atol=1e-5, rtol=1e-5)


def test_hidden_states_end_with_forward_features(tiny_encoder: AudioViT) -> None:
    x = torch.randn(2, 1, 64, 128)
    states = tiny_encoder.forward_hidden_states(x)
    assert len(states) == 1 + TINY_ENCODER.depth
    torch.testing.assert_close(states[-1], tiny_encoder.forward_features(x))
    assert states[0].shape == (2, 1 + 4 * 8, 64)
    assert not torch.allclose(states[1], states[2])


def test_bad_input_shapes_name_the_problem(tiny_encoder: AudioViT) -> None:
    with pytest.raises(AsitError, match="multiple of 16"):
        tiny_encoder(torch.randn(1, 1, 70, 128))
    with pytest.raises(AsitError, match=r"\[B, 1, T, 128\]"):
        tiny_encoder(torch.randn(1, 1, 64, 64))


def test_state_dict_uses_timm_names() -> None:
    names = set(AudioViT(TINY_ENCODER).state_dict())
    for key in ("patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.attn.qkv.bias", "norm.weight"):
        assert key in names
