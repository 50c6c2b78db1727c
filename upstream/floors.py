"""Floors: what an encoder file's numbers must beat. From one file, `initialised` gives the pretrained encoder, its
random-init twin (same architecture and frontend, weights drawn from a seed: the paper's "Scratch" rows), or the
`fbank_stats` floor on the same frontend (no weights), so all three run through the same runtime and tables."""

from __future__ import annotations

from typing import Any

import torch

from .encoders import AudioEncoder, FbankStatsConfig, build_encoder
from .errors import AsitError

INITS = ("pretrained", "scratch", "fbank_stats")
FLOOR_INITS = ("scratch", "fbank_stats")


def initialised(encoder: AudioEncoder, init: str, seed: int = 0, config: Any = None) -> AudioEncoder:
    """`encoder` itself, its seeded re-initialisation (of `config`, default the encoder's own: e.g. with another
    drop-path rate), or the fbank_stats floor with its number of mel bins.

    The global torch RNG is left as it was, so drawing a twin never shifts a caller's random stream."""
    if init not in INITS:
        raise AsitError(f"encoder init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "pretrained":
        return encoder
    if init == "fbank_stats":
        return build_encoder(FbankStatsConfig(num_mel_bins=encoder.num_mel_bins)).eval()
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        return build_encoder(config if config is not None else encoder.config).eval()
    finally:
        torch.set_rng_state(state)
