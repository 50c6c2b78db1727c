"""TEST ONLY: a tiny HEAR 2021 module (the API of hearbenchmark.com's "HEAR 2021 API": load_model,
get_scene_embeddings, get_timestamp_embeddings), standing in for someone else's model in tests of HEAR-module cells.

Its embedding is the log power of `dim` linear-frequency bands of an STFT at `sample_rate` (default 16 kHz, the rate
of `asit hear-tasks` folders, which heareval's runner reads at the model's rate; another rate makes a probe resample
clips for it), mean over time, mixed by a matrix seeded from the model file's bytes and scaled by the `scale`
option, so that the file's content and the options both change what it computes. `CALLS` counts the calls of each
function, so a test can prove a cached probe made none.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

__version__ = "0.0.1-test"

SAMPLE_RATE = 16000
N_FFT, HOP = 256, 128
CALLS = {"load_model": 0, "get_scene_embeddings": 0, "get_timestamp_embeddings": 0, "clips": 0}


class TinyHearModel(nn.Module):
    def __init__(self, seed: int, dim: int, scale: float, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.dim = int(dim)
        self.scene_embedding_size = self.timestamp_embedding_size = self.dim
        generator = torch.Generator().manual_seed(seed)
        mix = torch.eye(self.dim) + 0.1 * torch.randn(self.dim, self.dim, generator=generator)
        self.register_buffer("mix", float(scale) * mix)

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """[n, samples] -> [n, frames, dim] mixed log band powers."""
        spec = torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT, device=audio.device),
                          return_complex=True).abs().pow(2)                       # [n, bins, frames]
        bands = torch.stack([part.mean(dim=1) for part in torch.tensor_split(spec, self.dim, dim=1)], dim=1)
        return torch.log(bands + 1e-6).transpose(1, 2) @ self.mix


def load_model(model_file_path: str = "", dim: int = 8, scale: float = 1.0,
               sample_rate: int = SAMPLE_RATE) -> TinyHearModel:
    CALLS["load_model"] += 1
    content = Path(model_file_path).read_bytes() if model_file_path else b""
    seed = int.from_bytes(hashlib.sha256(content).digest()[:4], "little")
    return TinyHearModel(seed, dim, scale, sample_rate).eval()


def get_scene_embeddings(audio: torch.Tensor, model: TinyHearModel) -> torch.Tensor:
    CALLS["get_scene_embeddings"] += 1
    CALLS["clips"] += int(audio.shape[0])
    with torch.no_grad():
        return model.frames(audio).mean(dim=1)


def get_timestamp_embeddings(audio: torch.Tensor, model: TinyHearModel) -> tuple[torch.Tensor, torch.Tensor]:
    CALLS["get_timestamp_embeddings"] += 1
    with torch.no_grad():
        embeddings = model.frames(audio)
    timestamps = torch.arange(embeddings.shape[1], dtype=torch.float32) * HOP * 1000.0 / model.sample_rate
    return embeddings, timestamps.expand(audio.shape[0], -1)
