"""The encoder a task cell starts from: a checkpoint's teacher backbone, or the same architecture re-initialised.

Every supported file (our export, our Lightning pretraining checkpoint, an official ASiT checkpoint) is read by
`upstream.checkpoint.load_encoder`, which picks the teacher backbone of pretraining checkpoints. `init="scratch"` (the
paper's "Scratch" rows) keeps the file's architecture and frontend and draws fresh weights from the cell's seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from upstream.checkpoint import load_encoder
from upstream.encoders import AudioEncoder, build_encoder
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig

from .api import EncoderSpec

INITS = ("pretrained", "scratch")


@dataclass
class Backbone:
    encoder: AudioEncoder
    frontend: FrontendConfig      # the checkpoint's frontend (the one it was pretrained with), at the chosen rate
    source: str                   # export | lightning | official | state_dict
    init: str                     # pretrained | scratch


def load_backbone(spec: EncoderSpec, *, seed: int = 0, sample_rate: int | None = None,
                  drop_path: float | None = None) -> Backbone:
    """`spec.path`'s teacher backbone (or a seeded fresh one of the same shape), with `drop_path` if given."""
    if spec.init not in INITS:
        raise AsitError(f"encoder init must be one of {', '.join(INITS)}, got {spec.init!r}")
    loaded = load_encoder(spec.path, which="teacher", sample_rate=sample_rate)
    config = loaded.encoder.config
    if drop_path is not None:
        config = dataclasses.replace(config, drop_path_rate=float(drop_path))
    if spec.init == "scratch":
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        encoder = build_encoder(config)
        torch.set_rng_state(generator_state)
    elif config != loaded.encoder.config:
        encoder = build_encoder(config)
        encoder.load_state_dict(loaded.encoder.state_dict(), strict=True)
    else:
        encoder = loaded.encoder
    return Backbone(encoder, loaded.frontend, loaded.source, spec.init)
