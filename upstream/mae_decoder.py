"""AudioMAE pieces shared by MAE-style objectives: random patch masking, the decoder and the unshuffle.

The decoder follows AudioMAE's local-attention decoder (Huang et al., "Masked Autoencoders that Listen";
facebookresearch/AudioMAE `models_mae.py`, `decoder_mode=1`): a linear map from the encoder width to the decoder
width, a learned mask token filling the masked positions, a fixed 2-D sin-cos positional embedding, `depth` timm
`SwinTransformerBlock`s on the [B, Tp, Fp, C] patch grid with local windows (4, 4) — shift (0, 0) on even blocks and
(2, 0) on odd ones — and a final LayerNorm. Predictions (pixels, teacher features) are the objective's heads.

CHOICEs (none from a paper):
- a single-block decoder is *shifted* (shift (2, 0)): the SupMAM/MAM-CLAP paper says "a single transformer block with
  shifted local attention"; with more blocks AudioMAE's even/odd alternation applies.
- `kind: global` swaps the Swin blocks for plain timm ViT `Block`s with global attention (MAE's image decoder), for
  grids whose time patches are not a multiple of the window. `kind: local` refuses such grids instead of padding
  them (timm would pad with zero tokens that the windows then attend to).
- the sin-cos table is timm's `build_sincos2d_pos_embed` (time-major, like the encoder's tokens), not MAE's numpy
  version (same frequencies, another channel order).
- the visible ids are sorted (a uniformly random subset, as MAE's `argsort(noise)[:len_keep]`, in grid order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn
from timm.layers import build_sincos2d_pos_embed
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import Block

from .errors import AsitError
from .heads import init_linear_xavier

DECODER_KINDS = ("local", "global")


@dataclass(frozen=True)
class DecoderConfig:
    dim: int = 512                  # AudioMAE decoder_embed_dim
    depth: int | None = None        # None: the objective's preset (SupMAM: 16 as AudioMAE; CLAP variants: 1 [S3])
    heads: int = 16                 # AudioMAE decoder_num_heads
    window: list[int] = field(default_factory=lambda: [4, 4])   # AudioMAE window_size (time, frequency)
    shift: list[int] = field(default_factory=lambda: [2, 0])    # AudioMAE shift of the odd (shifted) blocks
    kind: str = "local"             # local (Swin windows, AudioMAE) | global (ViT blocks, MAE)
    mlp_ratio: float = 4.0

    def check(self, where: str = "objective.decoder.") -> None:
        if self.kind not in DECODER_KINDS:
            raise AsitError(f"{where}kind must be one of {', '.join(DECODER_KINDS)}, got {self.kind!r}")
        if self.dim <= 0 or self.dim % 4:
            raise AsitError(f"{where}dim must be a positive multiple of 4 (2-D sin-cos positions), got {self.dim}")
        if self.heads <= 0 or self.dim % self.heads:
            raise AsitError(f"{where}dim {self.dim} is not divisible by {where}heads {self.heads}")
        if self.depth is not None and self.depth < 1:
            raise AsitError(f"{where}depth must be at least 1, got {self.depth}")
        for name in ("window", "shift"):
            value = getattr(self, name)
            if len(value) != 2 or any(v < 0 for v in value):
                raise AsitError(f"{where}{name} must be two non-negative integers (time, frequency), got {value}")
        if min(self.window) < 1:
            raise AsitError(f"{where}window must be two positive integers, got {self.window}")
        if any(s >= w for s, w in zip(self.shift, self.window)):
            raise AsitError(f"{where}shift {self.shift} must be smaller than the window {self.window}")


def random_keep_ids(num_tokens: int, mask_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """MAE's unstructured random masking: the sorted ids of the len_keep = int(N·(1 − ratio)) visible tokens."""
    keep = int(num_tokens * (1.0 - mask_ratio))
    if keep < 1:
        raise AsitError(f"mask ratio {mask_ratio} leaves no visible token of {num_tokens}")
    return np.sort(rng.permutation(num_tokens)[:keep]).astype(np.int64)


def keep_mask(ids_keep: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """[B, L] visible ids -> [B, N] boolean, True where the token is masked (MAE's `mask`: 1 = removed)."""
    masked = torch.ones(ids_keep.shape[0], num_tokens, dtype=torch.bool, device=ids_keep.device)
    return masked.scatter(1, ids_keep, False)


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[B, N, D] tokens, [B, L] ids -> [B, L, D]."""
    return torch.gather(tokens, 1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def unshuffle(visible: torch.Tensor, ids_keep: torch.Tensor, num_tokens: int,
              mask_token: torch.Tensor) -> torch.Tensor:
    """Visible tokens [B, L, D] at `ids_keep` + the mask token elsewhere -> [B, N, D] in grid order."""
    b, _, d = visible.shape
    full = mask_token.to(visible.dtype).reshape(1, 1, d).expand(b, num_tokens, d)
    return full.scatter(1, ids_keep[..., None].expand(-1, -1, d), visible)


def sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions [Tp·Fp, dim], time-major (index t·Fp + f)."""
    return build_sincos2d_pos_embed([int(grid[0]), int(grid[1])], dim=dim)


class MAEDecoder(nn.Module):
    """Encoded visible tokens (CLS first) -> decoded features [B, N, dim] at every grid position.

    `grid` is the (time, frequency) patch grid it is built for; other grids work when they fit the windows."""

    def __init__(self, in_dim: int, config: DecoderConfig, grid: tuple[int, int], depth: int | None = None) -> None:
        super().__init__()
        config.check()
        depth = depth if depth is not None else config.depth
        if depth is None or depth < 1:
            raise AsitError(f"objective.decoder.depth must be at least 1, got {depth}")
        self.config, self.depth, self.grid = config, int(depth), (int(grid[0]), int(grid[1]))
        # timm shrinks a window to the grid along an axis the grid does not exceed (and then does not shift there)
        self.window = (min(self.grid[0], int(config.window[0])), min(self.grid[1], int(config.window[1])))
        self.check_grid(self.grid)
        dim = config.dim
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(self.grid, dim)[None], persistent=False)
        if config.kind == "local":
            window = self.window
            self.blocks = nn.ModuleList([
                SwinTransformerBlock(dim=dim, input_resolution=self.grid, num_heads=config.heads,
                                     window_size=window, shift_size=self.block_shift(i),
                                     mlp_ratio=config.mlp_ratio, qkv_bias=True, norm_layer=norm, dynamic_mask=True)
                for i in range(self.depth)])
        else:
            self.blocks = nn.ModuleList([
                Block(dim=dim, num_heads=config.heads, mlp_ratio=config.mlp_ratio, qkv_bias=True, norm_layer=norm)
                for _ in range(self.depth)])
        self.norm = norm(dim)
        self._init_weights()

    def block_shift(self, index: int) -> tuple[int, int]:
        """AudioMAE: (0, 0) on even blocks, the shift on odd ones; a lone block is shifted (the paper)."""
        shifted = self.depth == 1 or index % 2 == 1
        return (int(self.config.shift[0]), int(self.config.shift[1])) if shifted else (0, 0)

    def check_grid(self, grid: tuple[int, int]) -> None:
        if self.config.kind != "local":
            return
        for axis, size, window in zip(("time", "frequency"), grid, self.window):
            if size % window:
                raise AsitError(f"objective.decoder.kind local: {size} {axis} patches are not a multiple of the "
                                f"window {window}; use a crop of a multiple of {window} patches or "
                                f"objective.decoder.kind: global")

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        init_linear_xavier(self)

    def positions(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        pos = self.pos_embed if tuple(grid) == self.grid else sincos_2d(grid, self.config.dim)[None]
        return pos.to(device=like.device, dtype=like.dtype)

    def forward(self, latent: torch.Tensor, ids_keep: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """latent [B, 1 + L, D_enc] (CLS, then the visible tokens in `ids_keep` order), ids_keep [B, L] ->
        [B, Tp·Fp, dim] after the final norm."""
        grid = (int(grid[0]), int(grid[1]))
        self.check_grid(grid)
        b, n = latent.shape[0], grid[0] * grid[1]
        x = self.embed(latent)
        cls, visible = x[:, :1], x[:, 1:]
        x = unshuffle(visible, ids_keep, n, self.mask_token) + self.positions(grid, x)
        if self.config.kind == "local":
            x = x.reshape(b, grid[0], grid[1], -1)      # AudioMAE drops the CLS token for the windowed decoder
            for block in self.blocks:
                x = block(x)
            x = x.reshape(b, n, -1)
        else:
            x = torch.cat([cls, x], dim=1)              # MAE keeps it (position zero) through global attention
            for block in self.blocks:
                x = block(x)
            x = x[:, 1:]
        return self.norm(x)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, 1, T, F] -> [B, Tp·Fp, patch²], time-major tokens, each patch row-major (time, then frequency)."""
    b, c, t, f = x.shape
    tp, fp = t // patch, f // patch
    x = x.reshape(b, c, tp, patch, fp, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, tp * fp, patch * patch * c)


__all__ = ["DECODER_KINDS", "DecoderConfig", "MAEDecoder", "gather_tokens", "keep_mask", "patchify",
           "random_keep_ids", "sincos_2d", "unshuffle"]
