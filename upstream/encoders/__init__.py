"""Encoder registry: an `arch` name -> (config dataclass, module). Every exported file stores its `arch`; files from
before the registry (no `arch`) are ViTs."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..errors import AsitError
from .base import AudioEncoder, EncoderStates
from .conformer import CONFORMER_SIZES, ConformerConfig, ConformerEncoder
from .fbank_stats import FbankStatsConfig, FbankStatsEncoder
from .vit import VIT_SIZES, AudioViT, EncoderConfig

ARCHS: dict[str, tuple[type, type[AudioEncoder]]] = {
    "vit": (EncoderConfig, AudioViT),
    "conformer": (ConformerConfig, ConformerEncoder),
    "fbank_stats": (FbankStatsConfig, FbankStatsEncoder),   # the no-weights floor (docs/encoders.md)
}


def encoder_config_from_dict(data: Mapping[str, Any] | Any, where: str = "encoder.") -> Any:
    """A mapping (arch defaults to `vit`) or an encoder config dataclass -> the arch's resolved config."""
    from ..config import from_dict
    if dataclasses.is_dataclass(data):
        return data.resolved()  # type: ignore[union-attr]
    if not isinstance(data, Mapping):
        raise AsitError(f"config key {where.rstrip('.')} must be a mapping, got {data!r}")
    arch = data.get("arch", "vit")
    if arch not in ARCHS:
        raise AsitError(f"{where}arch {arch!r} unknown; registered: {', '.join(ARCHS)}")
    config_cls, _ = ARCHS[arch]
    return from_dict(config_cls, {**data, "arch": arch}, where).resolved()


def build_encoder(config: Any) -> AudioEncoder:
    """A config dataclass (or mapping) -> a freshly initialised encoder of its arch."""
    config = encoder_config_from_dict(config)
    return ARCHS[config.arch][1](config)


__all__ = ["ARCHS", "AudioEncoder", "AudioViT", "CONFORMER_SIZES", "ConformerConfig", "ConformerEncoder",
           "EncoderConfig", "EncoderStates", "FbankStatsConfig", "FbankStatsEncoder", "VIT_SIZES", "build_encoder",
           "encoder_config_from_dict"]
