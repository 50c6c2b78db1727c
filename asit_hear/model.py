"""The HEAR 2021 model object: a thin layer over the shared `EncoderRuntime`, so HEAR features are the runtime's
features by construction (same frontend, chunking, column pooling as s3prl, probes and finetuning).

Works for every registered encoder (a ViT's step is a 16-frame patch column = 160 ms, a conformer's 4 frames of
20 ms = 80 ms). Scene embeddings: per requested layer, the runtime's scene pooling (`pooling`: mean / max /
mean+max of a clip's step vectors, or the CLS token of encoders that have one); layers are concatenated.

Timestamp embeddings: one step vector (`columns`: the mean of a ViT column's 8 frequency patches, or their
concatenation) per timestamp. A step hop of 160 ms (80 ms) is too coarse for HEAR (hop <= 50 ms), so the fbank is
encoded `step / hop` times, each time with the step grid shifted by `hop` (frames of the normalised mean
prepended). Every timestamp embedding is thus a real step whose frames are centred on its timestamp: nothing is
interpolated or repeated, at the price of `step / hop` encoder passes (ViT: 4, conformer: 2 at the default 40 ms).
"""

from __future__ import annotations

import itertools

from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from upstream.config import from_dict
from upstream.errors import AsitError
from upstream.frontend import resample
from upstream.runtime import EncoderRuntime, RuntimeOptions, RuntimeOutput, load_runtime, scene_dim

HEAR_SAMPLE_RATE = 16000


class AudioInputError(ValueError, AsitError):
    """Audio handed to the HEAR API is not what it takes (a ValueError, as the API's users expect)."""


DEFAULT_TIMESTAMP_HOP_MS = 40
# Audio [n_sounds, n_samples] with n_samples <= this and more sounds than samples is refused as channels-last audio
# ([n_samples, channels]: mono 1, stereo 2, … 7.1 surround 8) rather than read as n_sounds clips of <= 0.5 ms.
CHANNELS_LAST_MAX = 8


@dataclass(frozen=True)
class HearOptions(RuntimeOptions):
    """`load_model` keyword options (heareval: `--model-options '{"layers": [6, 12], "precision": "bf16"}'`): the
    runtime's options (pooling, columns, chunk_frames, padding, precision, max_batch_chunks) plus these."""

    layers: Union[int, list[int], str] = -1   # block index(es) 0..depth (0 = input embeddings), -1 = last, "all"
    timestamp_hop_ms: Union[int, None] = None  # a divisor of the step hop, whole frames; None: 40, or the step if
                                               # it is shorter (fbank_stats: 10)
    which: str = "teacher"                    # network of a pretraining checkpoint
    frontend_sample_rate: Union[int, None] = None   # fbank rate override (official ASiT: 32000 unless set)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.layers, str) and self.layers != "all":
            raise AsitError(f"layers must be an int, a list of ints or 'all', got {self.layers!r}")
        if isinstance(self.layers, list) and not self.layers:
            raise AsitError("layers is an empty list")
        if self.timestamp_hop_ms is not None and self.timestamp_hop_ms <= 0:
            raise AsitError(f"timestamp_hop_ms must be positive, got {self.timestamp_hop_ms}")


class AsitHearModel(nn.Module):
    """What `load_model` returns: a frozen feature extractor (always in eval mode) with the HEAR attributes."""

    sample_rate = HEAR_SAMPLE_RATE

    def __init__(self, runtime: EncoderRuntime, options: HearOptions | None = None) -> None:
        super().__init__()
        self.options = options or HearOptions()
        self.runtime = runtime
        depth = runtime.depth
        requested = list(range(depth + 1)) if self.options.layers == "all" else (
            list(self.options.layers) if isinstance(self.options.layers, list) else [self.options.layers])
        self.layers = runtime.resolve_layers(requested)
        if len(set(self.layers)) != len(self.layers):
            raise AsitError(f"layers names a layer twice: {requested}")
        self.scene_embedding_size = scene_dim(runtime.encoder, self.options.pooling, runtime.options.columns) * len(
            self.layers)
        self.timestamp_embedding_size = runtime.embed_dim * len(self.layers)
        step_ms = runtime.frames_per_column * runtime.frontend.config.hop_samples * 1000 / runtime.sample_rate
        hop = self.options.timestamp_hop_ms or int(min(DEFAULT_TIMESTAMP_HOP_MS, step_ms))
        self.frame_shifts = self._frame_shifts(hop)
        self.timestamp_hop_ms = hop
        super().train(False)

    def _frame_shifts(self, hop_ms: int) -> list[int]:
        """Frames prepended in each pass so that the passes' columns interleave at `hop_ms`."""
        frame_ms = self.runtime.frontend.config.hop_samples * 1000 / self.runtime.sample_rate
        column_ms = self.runtime.frames_per_column * frame_ms
        step = hop_ms / frame_ms
        if step != int(step) or column_ms / hop_ms != int(column_ms / hop_ms):
            allowed = [int(k * frame_ms) for k in range(1, self.runtime.frames_per_column + 1)
                       if self.runtime.frames_per_column % k == 0]
            raise AsitError(f"timestamp_hop_ms {hop_ms} must be one of {allowed} "
                            f"(a whole number of {frame_ms:g} ms frames dividing the {column_ms:g} ms column)")
        return [j * int(step) for j in range(int(column_ms / hop_ms))]

    def train(self, mode: bool = True) -> "AsitHearModel":
        """Stays in eval mode: HEAR embeddings come from a frozen, deterministic encoder."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Where the encoder lives (its weights, or the buffers of a weightless floor)."""
        return next(itertools.chain(self.runtime.parameters(), self.runtime.buffers())).device

    # -- input -------------------------------------------------------------------------------------------------
    def waves(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """Validated HEAR audio [n, samples] at 16 kHz -> mono waveforms at the frontend's rate, on the model's
        device."""
        audio = check_audio(audio).to(self.device, torch.float32)
        audio = resample(audio, self.sample_rate, self.runtime.sample_rate)
        return list(audio)

    def _concat(self, per_layer: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(per_layer, dim=-1).float()

    # -- embeddings ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def scene_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        out = self.runtime(self.waves(audio), layers=self.layers)
        pooled = [out.scene(layer, self.options.pooling) for layer in out.layers]
        return self._concat(pooled).to(audio.device)

    @torch.no_grad()
    def timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        waves = self.waves(audio)
        n = len(waves)
        duration_ms = audio.shape[1] * 1000.0 / self.sample_rate
        shifted: list[torch.Tensor] = []
        totals: list[int] = []
        for shift in self.frame_shifts:        # padded in front as the encoder's pretraining padded (pad_with)
            feats, frames = self.runtime.laid_out(waves, before=shift)
            shifted += feats
            totals += frames
        out: RuntimeOutput = self.runtime.forward_features(shifted, self.layers, totals)
        states = self._concat(out.hidden_states)                             # [passes * n, C, D]
        passes, cols, times = self.timestamp_grid(out, n, duration_ms)
        states = states.reshape(len(self.frame_shifts), n, states.shape[1], states.shape[2])
        embeddings = states[passes, :, cols].permute(1, 0, 2).contiguous()   # [n, T, D]
        timestamps = times.to(torch.float32)[None].expand(n, -1).contiguous()
        return embeddings.to(audio.device), timestamps.to(audio.device)

    def timestamp_grid(self, out: RuntimeOutput, n: int, duration_ms: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pass index, column index, centre time in ms) of every timestamp, in time order.

        All clips of a HEAR batch have the same length, so the grid is shared: the columns (of any pass) whose
        centre lies in [0, duration]; at least the first one for clips shorter than its centre.
        """
        frame_ms = self.runtime.frontend.config.hop_samples * 1000 / self.runtime.sample_rate
        rows = []
        for j, shift in enumerate(self.frame_shifts):
            available = int(out.num_columns[j * n])
            centres = self.runtime.column_centers_ms(available) - shift * frame_ms
            rows += [(float(t), j, c) for c, t in enumerate(centres.tolist()) if t >= 0]
        rows.sort()
        kept = [r for r in rows if r[0] <= duration_ms] or rows[:1]
        device = out.num_columns.device
        times = torch.tensor([r[0] for r in kept], dtype=torch.float64, device=device)
        passes = torch.tensor([r[1] for r in kept], dtype=torch.long, device=device)
        cols = torch.tensor([r[2] for r in kept], dtype=torch.long, device=device)
        return passes, cols, times


def check_audio(audio: object) -> torch.Tensor:
    """HEAR input contract: a float tensor [n_sounds, n_samples] of finite mono audio; AudioInputError otherwise.

    Channels-last audio is refused by one rule: `n_samples <= CHANNELS_LAST_MAX` (8) and `n_sounds > n_samples`,
    e.g. a [48000, 2] stereo array, which would otherwise be read as 48000 sounds of 2 samples (0.125 ms each, far
    shorter than one 25 ms fbank window). A batch of at most as many sounds as samples ([1, 2], [4, 8]) is not
    judged by it."""
    if not isinstance(audio, torch.Tensor):
        raise AudioInputError(f"audio must be a torch.Tensor [n_sounds, n_samples], got {type(audio).__name__}")
    shape = tuple(audio.shape)
    if audio.ndim == 3:
        raise AudioInputError(f"audio has shape {shape}: asit_hear takes mono audio [n_sounds, n_samples]; "
                              "mix channels down (e.g. audio.mean(dim=1)) first")
    if audio.ndim != 2:
        raise AudioInputError(f"audio must have 2 dimensions [n_sounds, n_samples], got shape {shape}")
    if not audio.is_floating_point():
        raise AudioInputError(f"audio must be floating point in [-1, 1] (HEAR uses float32), got {audio.dtype}; "
                              "convert int16 PCM with audio.float() / 32768")
    if shape[0] == 0:
        raise AudioInputError(f"audio holds no sounds (shape {shape})")
    if shape[1] == 0:
        raise AudioInputError(f"audio holds sounds of 0 samples (shape {shape})")
    if shape[1] <= CHANNELS_LAST_MAX and shape[0] > shape[1]:
        raise AudioInputError(f"audio has shape {shape}: that looks like channels-last audio [n_samples, channels]; "
                              "HEAR takes mono audio [n_sounds, n_samples] at 16 kHz: mix down and add the sound "
                              "axis first (e.g. audio.mean(dim=1)[None])")
    finite = torch.isfinite(audio.to(torch.float32)).all(dim=1)     # float64 beyond ±3.4e38 would become Inf
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        shown = ", ".join(map(str, bad[:5])) + (", …" if len(bad) > 5 else "")
        raise AudioInputError(f"audio holds NaN or infinite samples (or values beyond the float32 range) in "
                              f"sound(s) {shown} of {shape[0]}")
    return audio


def build_model(model_file_path: str, **options: object) -> AsitHearModel:
    """Checkpoint (export, Lightning pretraining checkpoint or official ASiT) + options -> model on the CPU.
    Every problem is one AsitError line starting with `asit_hear.load_model:`."""
    try:
        opts = from_dict(HearOptions, dict(options), "")
        if not model_file_path:
            raise AsitError("needs a checkpoint: an exported encoder, a pretraining checkpoint or an official ASiT "
                            "checkpoint (heareval: --model PATH)")
        runtime = load_runtime(str(model_file_path), opts.runtime_options(), which=opts.which,
                               sample_rate=opts.frontend_sample_rate)
        return AsitHearModel(runtime, opts)
    except AsitError as exc:
        raise AsitError(f"asit_hear.load_model: {exc}") from None
