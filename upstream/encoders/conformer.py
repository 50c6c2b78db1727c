"""The conformer of "Conformer-based self-supervised learning for non-speech audio tasks" (Srivastava et al.,
§2.2), registered as arch `conformer`: the encoder of the wav2vec 2.0 objective (upstream/objectives/
wav2vec2_conformer.py), usable by every evaluation path through the encoder contract.

Paper (§2.2): 64-bin log-mel, 64 ms window, 20 ms hop; a feature encoder that stacks R = 4 consecutive frames and
maps them with one linear layer to latent vectors Z; a context encoder of one linear layer, conformer blocks
(FFN 1024, dropout 0.1, depthwise kernel 31 in the first block and 15 in the others, convolution module *before*
self-attention and no positional encoding besides the convolutions) and a final linear layer. cf_S: 12 blocks,
256-d, 8 heads; cf_L: 12 blocks, 768-d, 12 heads.

Our choices where the paper is silent (docs/pretraining.md lists them): Z has 256 dims and is layer-normalised
(wav2vec 2.0's feature LayerNorm) — with the final context linear (kept by the objective, not exported) this
reproduces the paper's 18.4M / 88.1M parameters; the blocks are torchaudio's `Conformer` layers with
`convolution_first=True` and GroupNorm (batch-invariant, unlike BatchNorm) in the convolution module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torchaudio
from torch import nn

from ..errors import AsitError
from .base import AudioEncoder, EncoderStates

# name -> (embed_dim, depth, num_heads)   (paper §2.2; "tiny" is ours, for CPU tests and demos)
CONFORMER_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 2),
    "small": (256, 12, 8),
    "large": (768, 12, 12),
}


@dataclass(frozen=True)
class ConformerConfig:
    arch: str = "conformer"
    size: str = "small"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    ffn_dim: int = 1024
    latent_dim: int = 256               # Z (our choice; fixes the paper's parameter counts)
    stack: int = 4                      # R, frames per step (paper)
    first_kernel_size: int = 31         # depthwise kernel of block 1 (paper)
    kernel_size: int = 15               # of the other blocks (paper)
    dropout: float = 0.1
    num_mel_bins: int = 64
    trained_frames: int = 500           # a 10 s clip (497 frames at a 20 ms hop) in one chunk of whole steps
    drop_path_rate: float = 0.0         # accepted for a uniform finetuning interface; conformers use dropout

    @property
    def frames_per_step(self) -> int:
        return self.stack

    def resolved(self) -> "ConformerConfig":
        if self.arch != "conformer":
            raise AsitError(f"encoder.arch {self.arch!r} given to the conformer config")
        if self.size not in CONFORMER_SIZES:
            raise AsitError(f"encoder.size {self.size!r} unknown for the conformer; choose one of "
                            f"{', '.join(CONFORMER_SIZES)}")
        dim, depth, heads = CONFORMER_SIZES[self.size]
        cfg = replace(self, embed_dim=self.embed_dim or dim, depth=self.depth or depth,
                      num_heads=self.num_heads or heads)
        if cfg.embed_dim % cfg.num_heads:  # type: ignore[operator]
            raise AsitError(f"encoder.embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        if cfg.trained_frames % cfg.stack:
            raise AsitError(f"encoder.trained_frames {cfg.trained_frames} is not a multiple of encoder.stack "
                            f"{cfg.stack}")
        for name in ("first_kernel_size", "kernel_size"):
            if getattr(cfg, name) % 2 == 0:
                raise AsitError(f"encoder.{name} must be odd (same-length depthwise convolution)")
        return cfg


def _blocks(cfg: ConformerConfig) -> nn.ModuleList:
    """Block 1 with the first kernel, the rest with the other, from torchaudio's public `Conformer`."""
    def stack(count: int, kernel: int) -> list[nn.Module]:
        if count <= 0:
            return []
        built = torchaudio.models.Conformer(
            input_dim=cfg.embed_dim, num_heads=cfg.num_heads, ffn_dim=cfg.ffn_dim, num_layers=count,
            depthwise_conv_kernel_size=kernel, dropout=cfg.dropout, use_group_norm=True, convolution_first=True)
        return list(built.conformer_layers)
    depth = int(cfg.depth)  # type: ignore[arg-type]
    return nn.ModuleList(stack(min(1, depth), cfg.first_kernel_size) + stack(depth - 1, cfg.kernel_size))


class ConformerEncoder(AudioEncoder):
    """fbank [B, T, 64] -> per-step states [B, T/4, 1, D]; `features` and `context` are the two halves the
    wav2vec 2.0 objective masks between."""

    arch = "conformer"
    has_cls = False

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        cfg = config.resolved()
        self.config = cfg
        self.embed_dim = int(cfg.embed_dim)  # type: ignore[arg-type]
        self.feature_proj = nn.Linear(cfg.num_mel_bins * cfg.stack, cfg.latent_dim)
        self.feature_norm = nn.LayerNorm(cfg.latent_dim)
        self.input_proj = nn.Linear(cfg.latent_dim, self.embed_dim)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.layers = _blocks(cfg)

    @property
    def frames_per_step(self) -> int:
        return self.config.stack

    @property
    def tokens_per_step(self) -> int:
        return 1

    @property
    def stem(self) -> nn.Module:
        return self.feature_proj

    @property
    def layer_modules(self) -> list[nn.Module]:
        return list(self.layers)

    def describe(self) -> str:
        cfg = self.config
        return (f"conformer {cfg.size}: dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, "
                f"{cfg.stack} frames per step, trained on {cfg.trained_frames} frames x {cfg.num_mel_bins} mel")

    def raw_features(self, fbank: torch.Tensor) -> torch.Tensor:
        """Time stacking + linear (the feature encoder, before its LayerNorm): [B, T/R, latent]."""
        self.check_fbank(fbank)
        b, t, f = fbank.shape
        return self.feature_proj(fbank.reshape(b, t // self.config.stack, self.config.stack * f))

    def context(self, latent: torch.Tensor, last: int | None = None) -> list[torch.Tensor]:
        """Normalised latents [B, S, latent] -> [input projection, block 1, …] as [B, S, D]."""
        stop = self.depth if last is None else last
        x = self.input_dropout(self.input_proj(latent))
        states = [x]
        x = x.transpose(0, 1)                                   # torchaudio's layers take [S, B, D]
        for layer in self.layers[:stop]:
            x = layer(x, None)
            states.append(x.transpose(0, 1))
        return states

    def forward_steps(self, fbank: torch.Tensor, last: int | None = None) -> EncoderStates:
        states = self.context(self.feature_norm(self.raw_features(fbank)), last=last)
        return EncoderStates([s.unsqueeze(2) for s in states], None)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank [B, T, F] -> last layer [B, T/R, D]."""
        return self.forward_steps(fbank).steps[-1][:, :, 0]

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^(feature_proj|feature_norm|input_proj)", "blocks": r"^layers\.(\d+)"}
