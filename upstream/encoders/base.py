"""The encoder contract every architecture implements, so one runtime serves pretraining exports, HEAR, s3prl,
probes and finetuning for any of them.

Input is a normalised fbank [B, T, F] with T a multiple of `frames_per_step`. Output is, per layer (0 = the input
embedding, `depth` = the last block), one group of tokens per time *step*: [B, S, G, D] with S = T / frames_per_step
and G the tokens a step holds (a ViT: its frequency patches, a conformer: 1). Pooling the G tokens (mean, or
concatenation into G·D) is the runtime's job, not the encoder's, so every consumer pools the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import AsitError


@dataclass
class EncoderStates:
    steps: list[torch.Tensor]            # per returned layer: [B, S, G, D]
    cls: list[torch.Tensor] | None       # per returned layer: [B, D], only for encoders with a CLS token


class AudioEncoder(nn.Module):
    """Base class of the registered encoders (see upstream.encoders.ARCHS)."""

    arch: ClassVar[str] = ""
    has_cls: ClassVar[bool] = False
    config: Any
    embed_dim: int                       # D (an attribute: timm's ViT sets it in its constructor)

    # -- geometry -------------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return int(self.config.depth)

    @property
    def num_mel_bins(self) -> int:
        return int(self.config.num_mel_bins)

    @property
    def trained_frames(self) -> int:
        return int(self.config.trained_frames)

    @property
    def frames_per_step(self) -> int:
        raise NotImplementedError

    @property
    def tokens_per_step(self) -> int:
        """G: tokens one time step holds (the runtime's `columns: concat` gives G·D features per step)."""
        raise NotImplementedError

    @property
    def stem(self) -> nn.Module:
        """The module every forward runs exactly once (forward counters hook it)."""
        raise NotImplementedError

    @property
    def layer_modules(self) -> list[nn.Module]:
        """The repeated blocks, one per layer: what regional torch.compile compiles (`compile_layers`)."""
        raise NotImplementedError

    def compile_layers(self) -> int:
        """torch.compile every layer block in place (nn.Module.compile): whichever encoder method a caller uses
        (forward_features, forward_tokens, context, ...) runs compiled blocks, identical blocks share one compiled
        graph, and the state dict keeps its names. Returns the blocks compiled."""
        blocks = self.layer_modules
        for block in blocks:
            block.compile()
        return len(blocks)

    def describe(self) -> str:
        """One line for `asit info` and s3prl's start-up print."""
        raise NotImplementedError

    # -- forward --------------------------------------------------------------------------------------------
    def check_fbank(self, fbank: torch.Tensor) -> None:
        if fbank.ndim != 3 or fbank.shape[2] != self.num_mel_bins:
            raise AsitError(f"{self.arch} encoder input must be [B, T, {self.num_mel_bins}], got "
                            f"{tuple(fbank.shape)}")
        if fbank.shape[1] == 0 or fbank.shape[1] % self.frames_per_step:
            raise AsitError(f"{self.arch} encoder input length {fbank.shape[1]} frames is not a positive multiple "
                            f"of {self.frames_per_step}; pad it (upstream.frontend.pad_or_crop)")

    def forward_steps(self, fbank: torch.Tensor, last: int | None = None) -> EncoderStates:
        """fbank [B, T, F] -> `EncoderStates` for layers 0..last (default depth); the last layer is final
        (normalised as the architecture's own last output) only when `last` is depth."""
        raise NotImplementedError

    # -- finetuning (timm's layer-wise lr decay groups) -----------------------------------------------------
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        return set()
