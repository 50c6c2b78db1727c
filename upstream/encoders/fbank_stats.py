"""The `fbank_stats` floor: an "encoder" without weights whose one layer is the normalised fbank itself.

A floor is what a comparison must beat before any learned representation is credited (docs/encoders.md, "Floors").
Each fbank frame is one step with one token of F = num_mel_bins values, so every consumer sees exactly what it sees
from a learned encoder: the runtime's `mean+std` scene pooling gives per-band mean and std of the clip (the classic
fbank-statistics baseline), HEAR timestamp embeddings are the frames (10 ms hop), s3prl's hidden state is the fbank.
Nothing here is trained; finetuning trains only the task head on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import AsitError
from .base import AudioEncoder, EncoderStates


@dataclass(frozen=True)
class FbankStatsConfig:
    arch: str = "fbank_stats"
    num_mel_bins: int = 128
    trained_frames: int = 1024          # the runtime's chunk length (any value gives the same statistics)
    drop_path_rate: float = 0.0         # accepted for a uniform finetuning interface; nothing to drop
    depth: int = 0                      # one layer: the input

    def resolved(self) -> "FbankStatsConfig":
        if self.arch != "fbank_stats":
            raise AsitError(f"encoder.arch {self.arch!r} given to the fbank_stats config")
        if self.depth != 0:
            raise AsitError(f"encoder.depth of fbank_stats is 0 (its only layer is the fbank), got {self.depth}")
        if self.num_mel_bins <= 0 or self.trained_frames <= 0:
            raise AsitError("encoder.num_mel_bins and encoder.trained_frames of fbank_stats must be positive")
        return self


class FbankStatsEncoder(AudioEncoder):
    """fbank [B, T, F] -> the fbank as per-frame steps [B, T, 1, F] (layer 0 is also the last)."""

    arch = "fbank_stats"
    has_cls = False

    def __init__(self, config: FbankStatsConfig) -> None:
        super().__init__()
        self.config = config.resolved()
        self.embed_dim = int(self.config.num_mel_bins)
        self.frames = nn.Identity()       # the stem forward counters hook (one call per encoder pass)
        # no weights, but `.to(device)` must still say where the floor runs (HEAR's model.device reads it)
        self.register_buffer("device_anchor", torch.zeros(0), persistent=False)

    @property
    def frames_per_step(self) -> int:
        return 1

    @property
    def tokens_per_step(self) -> int:
        return 1

    @property
    def stem(self) -> nn.Module:
        return self.frames

    @property
    def layer_modules(self) -> list[nn.Module]:
        return []              # no weights, nothing to compile

    def describe(self) -> str:
        return f"fbank_stats floor: the {self.config.num_mel_bins}-bin normalised fbank, no weights"

    def forward_steps(self, fbank: torch.Tensor, last: int | None = None) -> EncoderStates:
        self.check_fbank(fbank)
        return EncoderStates([self.frames(fbank).unsqueeze(2)], None)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(fbank).steps[-1][:, :, 0]

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^frames", "blocks": r"^blocks\.(\d+)"}
