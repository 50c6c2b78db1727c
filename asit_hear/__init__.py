"""asit_hear: the HEAR 2021 API over asit-hear encoders (exports, pretraining checkpoints, official ASiT).

    python -m heareval.embeddings.runner asit_hear --model encoder.pt --tasks-dir tasks \
        [--model-options '{"layers": [6, 12], "precision": "bf16"}']
    hear-validator asit_hear --model encoder.pt

See docs/hear.md for the options, how timestamp embeddings are made, and the heareval set-up.
"""

from __future__ import annotations

import torch

from .model import (CHANNELS_LAST_MAX, HEAR_SAMPLE_RATE, AsitHearModel, AudioInputError, HearOptions, build_model,
                    check_audio)

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "AsitHearModel", "HearOptions",
           "AudioInputError", "check_audio", "CHANNELS_LAST_MAX", "HEAR_SAMPLE_RATE"]


def load_model(model_file_path: str = "", **options: object) -> AsitHearModel:
    """HEAR `load_model`: a checkpoint path (+ `HearOptions` keywords) -> an `AsitHearModel` in eval mode.

    Missing, unreadable or mismatched checkpoints and unknown options raise `upstream.errors.AsitError` with a
    one-line message naming the file or option.
    """
    return build_model(model_file_path, **options)


def _checked(model: object) -> AsitHearModel:
    if not isinstance(model, AsitHearModel):
        raise ValueError(f"model must come from asit_hear.load_model, got {type(model).__name__}")
    return model


def get_scene_embeddings(audio: torch.Tensor, model: AsitHearModel) -> torch.Tensor:
    """HEAR scene embeddings: audio [n_sounds, n_samples] (16 kHz, float) -> float32 [n_sounds,
    model.scene_embedding_size] on the audio's device. Audio that is not finite mono [n_sounds, n_samples] raises
    `AudioInputError` (a ValueError); channels-last audio such as a [48000, 2] stereo array is refused by the rule
    of `check_audio` (n_samples <= 8 and more sounds than samples)."""
    return _checked(model).scene_embeddings(audio)


def get_timestamp_embeddings(audio: torch.Tensor, model: AsitHearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR timestamp embeddings: audio [n_sounds, n_samples] -> (float32 [n_sounds, n_timestamps,
    model.timestamp_embedding_size], timestamps [n_sounds, n_timestamps] in ms, the centre of each embedding's
    160 ms patch column, every `model.timestamp_hop_ms` ms). Audio is checked as by `get_scene_embeddings`."""
    return _checked(model).timestamp_embeddings(audio)
