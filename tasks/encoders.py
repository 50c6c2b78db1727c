"""The encoder a task cell starts from: a checkpoint's teacher backbone, or one of its floors.

Every supported file (our export, our Lightning pretraining checkpoint, an official ASiT checkpoint) is read by
`upstream.checkpoint.load_encoder`, which picks the teacher backbone of pretraining checkpoints. `init="scratch"` (the
paper's "Scratch" rows) keeps the file's architecture and frontend and draws fresh weights from the cell's seed;
`init="fbank_stats"` keeps only the frontend (upstream.floors).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from upstream.checkpoint import load_encoder
from upstream.encoders import AudioEncoder, build_encoder
from upstream.errors import AsitError
from upstream.floors import INITS, initialised
from upstream.frontend import FrontendConfig

from .api import EncoderSpec


@dataclass
class Backbone:
    encoder: AudioEncoder
    frontend: FrontendConfig      # the checkpoint's frontend (the one it was pretrained with), at the chosen rate
    source: str                   # export | lightning | official | state_dict
    init: str                     # pretrained | scratch | fbank_stats


def load_backbone(spec: EncoderSpec, *, seed: int = 0, sample_rate: int | None = None,
                  drop_path: float | None = None) -> Backbone:
    """`spec.path`'s teacher backbone (or its floor: a seeded fresh one of the same shape, or fbank_stats), with
    `drop_path` if given."""
    if spec.init not in INITS:
        raise AsitError(f"encoder init must be one of {', '.join(INITS)}, got {spec.init!r}")
    loaded = load_encoder(spec.path, which="teacher", sample_rate=sample_rate)
    config = loaded.encoder.config
    if drop_path is not None:
        config = dataclasses.replace(config, drop_path_rate=float(drop_path))
    if spec.init != "pretrained":
        encoder = initialised(loaded.encoder, spec.init, seed, config)
    elif config != loaded.encoder.config:
        encoder = build_encoder(config)
        encoder.load_state_dict(loaded.encoder.state_dict(), strict=True)
    else:
        encoder = loaded.encoder
    return Backbone(encoder, loaded.frontend, loaded.source, spec.init)
