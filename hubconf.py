"""torch.hub entry points of asit-hear: an exported encoder (or any file `upstream.checkpoint.load_encoder` reads)
as the shared encoder runtime or as the HEAR 2021 model, without installing the project.

    import torch
    model = torch.hub.load("/path/to/asit-hear", "hear_model", source="local", checkpoint="encoder.safetensors")
    runtime = torch.hub.load("/path/to/asit-hear", "asit_encoder", source="local", checkpoint="encoder.pt")

From GitHub, give the repository as OWNER/NAME[:REF] instead of the path and drop `source="local"`. `checkpoint` may
be an http(s) URL: it is downloaded once into torch.hub's cache (`upstream.checkpoint.fetch_checkpoint`).

This file only forwards to the project's packages (docs/checkpoints.md, "torch.hub").
"""

from __future__ import annotations

from typing import Any

from asit_hear import AsitHearModel, load_model
from upstream.checkpoint import fetch_checkpoint
from upstream.config import from_dict
from upstream.runtime import EncoderRuntime, RuntimeOptions, load_runtime

# module names torch.hub checks before calling an entry point: what loading and running an encoder imports
# (yaml is PyYAML's module)
dependencies = ["torch", "torchaudio", "timm", "safetensors", "yaml", "soundfile"]


def asit_encoder(checkpoint: str, *, which: str = "teacher", sample_rate: int | None = None, progress: bool = True,
                 check_hash: bool = False, **runtime_options: Any) -> EncoderRuntime:
    """The encoder runtime (upstream.runtime.EncoderRuntime, in eval mode on the CPU) of `checkpoint`: a .pt or
    .safetensors export, a pretraining checkpoint, an official ASiT checkpoint, or an http(s) URL of one.

    Call it with a list of mono waveforms at `runtime.sample_rate` to get per-layer features, as HEAR, s3prl and the
    probes do. `runtime_options` are `RuntimeOptions` fields (pooling, columns, chunk_frames, padding, precision,
    max_batch_chunks); `which` picks a pretraining checkpoint's network, `sample_rate` overrides the fbank's rate;
    `progress` / `check_hash` apply to a URL's download."""
    path = fetch_checkpoint(checkpoint, progress=progress, check_hash=check_hash)
    options = from_dict(RuntimeOptions, runtime_options, "")
    return load_runtime(str(path), options, which=which, sample_rate=sample_rate)


def hear_model(checkpoint: str, *, progress: bool = True, check_hash: bool = False,
               **options: Any) -> AsitHearModel:
    """The HEAR 2021 model of `checkpoint` (a local file or an http(s) URL), exactly what
    `asit_hear.load_model(path, **options)` returns: use it with `asit_hear.get_scene_embeddings` /
    `get_timestamp_embeddings`. `options` are `asit_hear.HearOptions` fields (layers, pooling, precision, ...);
    `progress` / `check_hash` apply to a URL's download."""
    path = fetch_checkpoint(checkpoint, progress=progress, check_hash=check_hash)
    return load_model(str(path), **options)
