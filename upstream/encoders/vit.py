"""ViT encoder over [B, 1, T, F] log-mel input, built on timm's VisionTransformer (registered as arch `vit`).

Time is the image height, frequency the width (as in the official ASiT code), so the state dict uses timm's own
names and an official ASiT backbone loads without renaming. Learned positional embeddings are sized for
`trained_frames`. A shorter input uses the embeddings of the time positions it covers (the first rows of the grid,
the field's usual practice for inputs shorter than pretraining); a longer one gets the grid resampled by timm
(bicubic, time axis only in effect).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from ..errors import AsitError
from .base import AudioEncoder, EncoderStates

# name -> (embed_dim, depth, num_heads)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


@dataclass(frozen=True)
class EncoderConfig:
    """`size` picks the ViT preset; `embed_dim`/`depth`/`num_heads` override it (tests use 2-block models)."""

    arch: str = "vit"
    size: str = "base"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    patch_size: int = 16
    num_mel_bins: int = 128
    trained_frames: int = 592
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1

    def resolved(self) -> "EncoderConfig":
        """Fill embed_dim/depth/num_heads from the preset and check the geometry."""
        if self.arch != "vit":
            raise AsitError(f"encoder.arch {self.arch!r} given to the ViT config")
        if self.size not in VIT_SIZES:
            raise AsitError(f"encoder.size {self.size!r} unknown; choose one of {', '.join(VIT_SIZES)}")
        dim, depth, heads = VIT_SIZES[self.size]
        cfg = replace(self, embed_dim=self.embed_dim or dim, depth=self.depth or depth,
                      num_heads=self.num_heads or heads)
        if cfg.embed_dim % cfg.num_heads:
            raise AsitError(f"encoder.embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        for name in ("trained_frames", "num_mel_bins"):
            if getattr(cfg, name) % cfg.patch_size:
                raise AsitError(f"encoder.{name} {getattr(cfg, name)} is not a multiple of the patch size "
                                f"{cfg.patch_size}")
        return cfg

    @property
    def frames_per_step(self) -> int:
        return self.patch_size

    @property
    def freq_patches(self) -> int:
        return self.num_mel_bins // self.patch_size


class AudioViT(VisionTransformer, AudioEncoder):
    """timm ViT with one input channel, a CLS token, dynamic time length and access to every block's output."""

    arch = "vit"
    has_cls = True

    def __init__(self, config: EncoderConfig) -> None:
        cfg = config.resolved()
        super().__init__(
            img_size=(cfg.trained_frames, cfg.num_mel_bins), patch_size=cfg.patch_size, in_chans=1,
            num_classes=0, global_pool="", embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio, qkv_bias=True, drop_path_rate=cfg.drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), dynamic_img_size=True)
        self.config = cfg

    def check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[3] != cfg.num_mel_bins:
            raise AsitError(f"encoder input must be [B, 1, T, {cfg.num_mel_bins}], got {tuple(x.shape)}")
        if x.shape[2] % cfg.patch_size:
            raise AsitError(f"encoder input length {x.shape[2]} frames is not a multiple of {cfg.patch_size}; "
                            "pad it (upstream.frontend.pad_or_crop)")

    def grid(self, frames: int) -> tuple[int, int]:
        """(time patches, frequency patches) for an input of `frames` frames."""
        return frames // self.config.patch_size, self.config.freq_patches

    # -- the encoder contract ---------------------------------------------------------------------------------
    @property
    def frames_per_step(self) -> int:
        return self.config.patch_size

    @property
    def tokens_per_step(self) -> int:
        return self.config.freq_patches

    @property
    def stem(self) -> nn.Module:
        return self.patch_embed

    @property
    def layer_modules(self) -> list[nn.Module]:
        return list(self.blocks)

    def describe(self) -> str:
        cfg = self.config
        return (f"ViT {cfg.size}: dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, patch "
                f"{cfg.patch_size}, trained on {cfg.trained_frames} frames x {cfg.num_mel_bins} mel")

    def forward_steps(self, fbank: torch.Tensor, last: int | None = None) -> EncoderStates:
        self.check_fbank(fbank)
        states = self.forward_hidden_states(fbank.unsqueeze(1), last=last)
        b, grid = fbank.shape[0], self.grid(fbank.shape[1])
        steps = [s[:, 1:].reshape(b, grid[0], grid[1], s.shape[-1]) for s in states]
        return EncoderStates(steps, [s[:, 0] for s in states])

    # -- ViT internals (the ASiT objective works on tokens) ----------------------------------------------------
    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Shorter inputs take the positional embeddings of the time positions they cover; the trained length
        and longer ones go through timm (identity / bicubic resampling)."""
        b, h, w, d = x.shape
        trained_h = self.config.trained_frames // self.config.patch_size
        if h >= trained_h:
            return super()._pos_embed(x)
        grid = self.pos_embed[:, self.num_prefix_tokens:].reshape(1, trained_h, w, d)[:, :h]
        x = (x + grid).reshape(b, h * w, d)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        return self.pos_drop(torch.cat([cls, x], dim=1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch + positional embedding with the CLS token prepended: [B, 1 + Tp·Fp, D], time-major order."""
        self.check_input(x)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedded tokens -> final normalised tokens."""
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """[B, 1, T, F] -> normalised tokens [B, 1 + Tp·Fp, D]."""
        return self.forward_tokens(self.embed(x))

    def forward_hidden_states(self, x: torch.Tensor, last: int | None = None) -> list[torch.Tensor]:
        """[embeddings, block 1, …, block L]: L + 1 tensors [B, 1 + N, D]; the last one passes the final norm.

        `last` stops after that many blocks (the last returned is then raw, not normalised).
        """
        depth = len(self.blocks)
        stop = depth if last is None else last
        tokens = self.embed(x)
        states = [tokens]
        for index, block in enumerate(self.blocks[:stop], start=1):
            tokens = block(tokens)
            states.append(self.norm(tokens) if index == depth else tokens)
        return states

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_features(x)
