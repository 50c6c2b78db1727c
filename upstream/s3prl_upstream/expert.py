"""s3prl `UpstreamExpert` for any registered encoder (ASiT ViTs, conformers): a thin adapter over the shared
`EncoderRuntime` (no second forward). The numbers below are the ViT's; the conformer's step is 4 frames of 20 ms
(downsample rate 1280) and `pad_to_rule` keeps its lengths within s3prl's rules (docs/s3prl.md).

Contract (s3prl `upstream/example/expert.py`): `forward(wavs: list[Tensor(T_i)] at 16 kHz)` returns
`{"hidden_states": [L + 1 tensors (B, T', D)], "last_hidden_state": (B, T', D)}` — the patch embeddings and every
block's output (the last one after the final LayerNorm), as the runtime computes them.

- One vector per time step: the runtime's patch *column* (16 fbank frames = 160 ms), by default the mean of the 8
  frequency-patch tokens of that column (`columns: concat` in `-g` concatenates them, 8·D), the same per-time-step
  feature HEAR and the probes use, so the three evaluations see identical representations.
- `get_downsample_rates(key)` = 16 frames × 10 ms = 2560 samples at 16 kHz, exact.
- Lengths: clip i gets every column the runtime computed, n_i = ceil(frames_i / 16), each holding audio, zeros
  beyond; the batch is padded to ceil(max_len / 2560) columns. s3prl has two rules for the valid length of a clip
  of T samples: `run_downstream`'s Featurizer keeps round(T / rate), `s3prl.nn.S3PRLUpstream` ceil(T / rate). For
  every T, round(T / 2560) <= n_i <= ceil(T / 2560) (tests check this exhaustively), so the runner's slice never
  reaches a padded column and its length check sees a difference of at most 1 (it tolerates 4), while
  S3PRLUpstream gets exactly the width it expects; the only padded column it can count is the remainder of a
  clip whose last < 400 samples (one fbank window) produce no frame.
- Padding-aware by construction: the runtime encodes every clip on its own (chunked at the encoder's trained
  length), so a clip's features are the same alone or in any batch.
- Checkpoints whose frontend runs at another rate (official ASiT: 32 kHz) get s3prl's 16 kHz audio resampled first;
  the fbank hop (10 ms) and hence the downsample rate stay the same.
- Finetuning (`run_downstream -f`): gradients flow through the runtime's `forward_features`, which runs in the
  caller's grad mode, as s3prl expects (its runner wraps frozen upstreams in `no_grad` itself).

Options come from s3prl's `-g` (model_config): a YAML mapping of `ExpertOptions` fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml
from torch import nn

from ..checkpoint import load_encoder
from ..config import from_dict
from ..errors import AsitError
from ..frontend import resample
from ..runtime import EncoderRuntime, RuntimeOptions, RuntimeOutput

S3PRL_SAMPLE_RATE = 16000   # s3prl feeds every upstream 16 kHz mono waveforms

@dataclass(frozen=True)
class ExpertOptions(RuntimeOptions):
    """Settings readable from s3prl's `-g model_config.yaml`: the runtime's options (columns, chunk_frames, padding,
    precision, max_batch_chunks; `pooling` does not apply to hidden states) plus these."""

    which: str = "teacher"            # teacher | student weights of pretraining checkpoints
    sample_rate: int | None = None    # frontend rate override (default: the file's; official ASiT: 32000)
    stats: str | None = None          # normalisation statistics override, a DATASET_STATS name (paper Table I)


def read_options(model_config: str | Path | None) -> ExpertOptions:
    """`-g` file -> ExpertOptions; None (no `-g`) gives the defaults."""
    if model_config is None:
        return ExpertOptions()
    path = Path(model_config)
    if not path.is_file():
        raise AsitError(f"upstream model_config {path} (-g) does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AsitError(f"upstream model_config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise AsitError(f"upstream model_config {path} must hold a mapping of options, got {type(data).__name__}")
    try:
        return from_dict(ExpertOptions, data)
    except AsitError as exc:
        raise AsitError(f"upstream model_config {path}: {exc}") from None


def downsample_rate(runtime: EncoderRuntime) -> int:
    """Samples at 16 kHz per output frame (one patch column)."""
    hop = runtime.column_hop_ms * S3PRL_SAMPLE_RATE / 1000.0
    if abs(hop - round(hop)) > 1e-9:
        raise AsitError(f"a column hop of {runtime.column_hop_ms} ms is not a whole number of 16 kHz samples")
    return int(round(hop))


def batch_width(lengths: Sequence[int], rate: int) -> int:
    """Output frames of a batch: s3prl.nn's ceil(max_len / rate) (run_downstream's round() is at most one less)."""
    return max(1, math.ceil(max(lengths) / rate))


class UpstreamExpert(nn.Module):
    """ASiT upstream for s3prl. `ckpt` (s3prl `-k`): any file `upstream.checkpoint.load_encoder` reads;
    `sources` restricts which kinds are accepted (the hub entries use it to catch a mixed-up checkpoint)."""

    def __init__(self, ckpt: str | Path | None = None, model_config: str | Path | None = None,
                 sources: Sequence[str] | None = None, entry: str = "asit", **kwargs: Any) -> None:
        super().__init__()
        self.name = f"[{entry}]"
        if not ckpt:
            raise AsitError(f"{entry} needs an encoder file: pass it with -k/--upstream_ckpt")
        options = read_options(model_config)
        loaded = load_encoder(ckpt, which=options.which, sample_rate=options.sample_rate)
        if sources is not None and loaded.source not in sources:
            raise AsitError(f"{entry} expects {' or '.join(sources)} checkpoints, but {ckpt} is a {loaded.source} "
                            "checkpoint (use asit_local for our exports/pretraining checkpoints, asit_official for "
                            "official ASiT checkpoints)")
        frontend = loaded.frontend.with_stats(options.stats) if options.stats else loaded.frontend
        self.options = options
        self.source = loaded.source
        self.runtime = EncoderRuntime(loaded.encoder, frontend, options.runtime_options())
        self.layers = list(range(self.runtime.depth + 1))
        self.rate = downsample_rate(self.runtime)
        print(f"{self.name} - {loaded.source} encoder {ckpt}: {loaded.encoder.describe()}, "
              f"chunks of {self.runtime.chunk_frames} frames; fbank at {frontend.sample_rate} Hz, stats "
              f"{frontend.stats} (mean {frontend.mean}, std {frontend.std}); {len(self.layers)} hidden states, "
              f"downsample rate {self.rate}")

    def get_downsample_rates(self, key: str) -> int:
        return self.rate

    def encode(self, wavs: Sequence[torch.Tensor]) -> RuntimeOutput:
        """16 kHz waveforms -> the runtime's output for every layer (gradients follow the caller's grad mode)."""
        if len(wavs) == 0:
            raise AsitError("the upstream got an empty batch")
        waves = []
        for i, wav in enumerate(wavs):
            if wav.ndim != 1:
                raise AsitError(f"waveform {i} has shape {tuple(wav.shape)}; s3prl upstreams take 1-D 16 kHz audio")
            waves.append(self.pad_to_rule(resample(wav, S3PRL_SAMPLE_RATE, self.runtime.sample_rate),
                                          int(wav.shape[-1])))
        feats, frames = self.runtime.laid_out(waves)
        return self.runtime.forward_features(feats, self.layers, frames)

    def pad_to_rule(self, wave: torch.Tensor, samples_16k: int) -> torch.Tensor:
        """Zero-pad the end when the clip would otherwise get fewer steps than run_downstream's round(T / rate):
        by one window minus one hop (a long window over few frames per step, e.g. the conformer's 64 ms over
        4 x 20 ms), then by single hops while still short (one-frame steps: the fbank_stats floor); then
        round(T / rate) <= steps <= ceil(T / rate) holds. ViT frontends never need it."""
        cfg = self.runtime.frontend.config
        wanted = round(samples_16k / self.rate)
        pad = 0
        while -(-cfg.num_frames(int(wave.shape[-1]) + pad) // self.runtime.frames_per_column) < wanted:
            pad = cfg.window_samples - cfg.hop_samples if pad == 0 else pad + cfg.hop_samples
        return nn.functional.pad(wave, (0, pad)) if pad else wave

    def forward(self, wavs: Sequence[torch.Tensor]) -> dict[str, Any]:
        out = self.encode(wavs)
        width = max(batch_width([int(w.shape[-1]) for w in wavs], self.rate), out.hidden_states[0].shape[1])
        hidden = [nn.functional.pad(h, (0, 0, 0, width - h.shape[1])) for h in out.hidden_states]
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1]}
