"""The one audio frontend: file -> mono 16 kHz waveform -> 128-bin Kaldi log-mel fbank -> dataset normalisation.

Pretraining, HEAR, s3prl, probes and finetuning all call `Frontend`; a feature mismatch between pretraining and
evaluation is the classic silent bug of this field, so there is deliberately no second implementation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import soundfile
import torch
import torchaudio

from .errors import AsitError

# Paper, Table I: log-mel mean/std per dataset (AudioSet also for pretraining), for the 128-bin, 25 ms / 10 ms fbank
# only (`TABLE_I_GEOMETRY`); other frontends (the conformer's 64-bin, 64 ms / 20 ms) estimate their own.
TABLE_I_GEOMETRY = (128, 25.0, 10.0)
DATASET_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.268, 4.569),
    "esc50": (-6.627, 5.358),
    "speechcommands_v2": (-6.846, 5.565),
    "speechcommands_v1": (-6.702, 5.448),
    "voxceleb1": (-6.370, 3.074),
}
# What padded frames hold (`FrontendConfig.pad_with`): the normalised dataset mean (0, how this project's pretraining
# pads crops) or digital silence (the fbank of a zero-padded waveform, how official ASiT pads clips shorter than 6 s).
PAD_WITH = ("mean", "silence")
# Kaldi's fbank floors mel energies at float32 epsilon before the log, so silence is log(eps) in every bin
SILENCE_LOG_MEL = math.log(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class FrontendConfig:
    """Everything needed to turn a waveform into the encoder's input; stored inside every exported encoder.

    `std_scale` = 2 follows the official ASiT/AST code, which divides by 2·std so inputs sit roughly in [-1, 1].
    `sample_rate` is the rate the fbank is computed at (the paper: 16 kHz; official ASiT code: 32 kHz).
    `pad_with` is what the checkpoint's own pretraining pipeline put in padded frames, so that evaluation pads the
    same way: `mean` (0 after normalisation; this project) or `silence` (official ASiT zero-pads the waveform).
    """

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window: str = "hanning"
    stats: str = "audioset"
    mean: float | None = None   # None: taken from DATASET_STATS[stats]
    std: float | None = None
    std_scale: float = 2.0
    pad_with: str = "mean"

    def __post_init__(self) -> None:
        if self.pad_with not in PAD_WITH:
            raise AsitError(f"frontend.pad_with must be one of {', '.join(PAD_WITH)}, got {self.pad_with!r}")
        if not self.sample_rate > 0:
            raise AsitError(f"frontend.sample_rate must be a positive number of Hz, got {self.sample_rate}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise AsitError(f"frontend.{name} must be a finite number, got {value}")
        if self.stats == "estimate" and (self.mean is None or self.std is None):
            return  # resolved from the training data by `asit pretrain` (estimate_stats) before any use
        if self.mean is None or self.std is None:
            if self.stats in DATASET_STATS and not self.table_i_geometry:
                raise AsitError(f"frontend.stats {self.stats!r} (paper Table I) holds statistics of the 128-bin "
                                f"25/10 ms fbank, not of this {self.num_mel_bins}-bin {self.frame_length_ms:g}/"
                                f"{self.frame_shift_ms:g} ms one; use stats: estimate or give frontend.mean/std")
            if self.stats not in DATASET_STATS:
                raise AsitError(f"frontend.stats {self.stats!r} is not one of {', '.join(DATASET_STATS)}; "
                                "give frontend.mean and frontend.std for custom statistics")
            mean, std = DATASET_STATS[self.stats]
            object.__setattr__(self, "mean", mean if self.mean is None else self.mean)
            object.__setattr__(self, "std", std if self.std is None else self.std)
        if not self.std > 0:  # type: ignore[operator]
            raise AsitError(f"frontend.std must be positive, got {self.std}")

    @property
    def table_i_geometry(self) -> bool:
        """Whether the paper's Table I statistics describe this fbank."""
        return (self.num_mel_bins, float(self.frame_length_ms), float(self.frame_shift_ms)) == TABLE_I_GEOMETRY

    def with_stats(self, name: str) -> "FrontendConfig":
        """The same frontend normalised with a named dataset's statistics (Table I)."""
        if name not in DATASET_STATS:
            raise AsitError(f"unknown dataset statistics {name!r}; known: {', '.join(DATASET_STATS)}")
        return replace(self, stats=name, mean=None, std=None)

    def with_estimate(self, mean: float, std: float) -> "FrontendConfig":
        return replace(self, stats="estimate", mean=float(mean), std=float(std))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.frame_shift_ms / 1000))

    @property
    def window_samples(self) -> int:
        return int(round(self.sample_rate * self.frame_length_ms / 1000))

    def frame_centers_ms(self, num_frames: int) -> torch.Tensor:
        """Centre time of each Kaldi frame (snip_edges=True: frame i covers [i·hop, i·hop + window))."""
        idx = torch.arange(num_frames, dtype=torch.float64)
        return (idx * self.hop_samples + self.window_samples / 2) * 1000.0 / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        """Frames the fbank yields for a waveform of this many samples (after padding to one window)."""
        n = max(num_samples, self.window_samples)
        return 1 + (n - self.window_samples) // self.hop_samples

    def samples_for(self, frames: int) -> int:
        """The shortest waveform that yields `frames` fbank frames."""
        return self.window_samples + (max(frames, 1) - 1) * self.hop_samples

    @property
    def pad_value(self) -> float:
        """The normalised value of a padded frame (every bin): 0 for `mean`, normalised log(eps) for `silence`."""
        if self.pad_with == "mean":
            return 0.0
        return (SILENCE_LOG_MEL - self.mean) / (self.std * self.std_scale)  # type: ignore[operator]


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read any soundfile-supported file as float32 [channels, samples]."""
    if not Path(path).is_file():
        raise AsitError(f"audio file {path} does not exist")
    try:
        data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AsitError(f"audio file {path} could not be read: {exc}") from None
    return torch.from_numpy(data.T.copy()), int(sr)


def to_mono(wave: torch.Tensor) -> torch.Tensor:
    """[channels, samples] or [samples] -> [samples] (channel mean)."""
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise AsitError(f"expected a waveform [channels, samples] or [samples], got shape {tuple(wave.shape)}")
    return wave.mean(dim=0)


# Cached resamplers: distinct (rates, dtype, device) keys a process keeps (a data set has one or a few source rates),
# and the largest kernel (elements) `resample` keeps: rates with a small common divisor (16000 -> 15999) give kernels
# of gigabytes, which it builds per call as before instead of holding them for the life of the process.
RESAMPLER_CACHE_SIZE = 16
RESAMPLER_CACHE_MAX_ELEMENTS = 2**25   # 128 MiB in float32; 8-48 kHz -> 16 kHz need under 0.3 M, 44056 -> 16000 11 M


def _kernel_elements(orig_sr: int, target_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> int:
    """Size of torchaudio's sinc kernel for a rate pair ([new, 1, orig + 2·width] after dividing by the gcd), the
    formula of `torchaudio.functional._get_sinc_resample_kernel`; only decides whether the kernel is cached."""
    gcd = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // gcd, int(target_sr) // gcd
    width = math.ceil(lowpass_filter_width * orig / (min(orig, new) * rolloff))
    return new * (orig + 2 * width)


def resampler(orig_sr: int, target_sr: int, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> torchaudio.transforms.Resample:
    """The shared `torchaudio.transforms.Resample` for a rate pair, dtype and device: its sinc kernel is built once
    per process (DataLoader workers each build their own) instead of on every call, as the functional form does.

    torchaudio.functional.resample's defaults (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99), with the
    kernel computed in `dtype` as the functional form does for a waveform of that dtype, so a CPU result is
    bit-identical to it. Shared between callers: use it, do not move, convert or train it.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:     # one key for "cuda" and the tensors' "cuda:N"
        device = torch.device("cuda", torch.cuda.current_device())
    return _cached_resampler(int(orig_sr), int(target_sr), dtype, device)


@functools.lru_cache(maxsize=RESAMPLER_CACHE_SIZE)
def _cached_resampler(orig_sr: int, target_sr: int, dtype: torch.dtype,
                      device: torch.device) -> torchaudio.transforms.Resample:
    # a kernel built inside torch.inference_mode would be an inference tensor, which autograd cannot save later
    with torch.inference_mode(False), torch.no_grad():
        module = torchaudio.transforms.Resample(orig_sr, target_sr, resampling_method="sinc_interp_hann",
                                                lowpass_filter_width=6, rolloff=0.99, dtype=dtype)
        return module.to(device)


def resample(wave: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """`torchaudio.functional.resample(wave, orig_sr, target_sr)` ([..., samples]; the input itself when the rates
    are equal) through the cached `resampler`, so the sinc kernel is not rebuilt for every clip."""
    if orig_sr == target_sr:
        return wave
    if (not wave.is_floating_point() or orig_sr <= 0 or target_sr <= 0 or int(orig_sr) != orig_sr
            or int(target_sr) != target_sr
            or _kernel_elements(orig_sr, target_sr) > RESAMPLER_CACHE_MAX_ELEMENTS):
        return torchaudio.functional.resample(wave, orig_sr, target_sr)   # its own errors, or a kernel not kept
    return resampler(int(orig_sr), int(target_sr), wave.dtype, wave.device)(wave)


class Frontend:
    """Waveform -> normalised log-mel fbank [frames, mel], one clip at a time (so batches never mix statistics)."""

    def __init__(self, config: FrontendConfig | None = None) -> None:
        self.config = config or FrontendConfig()
        if self.config.mean is None or self.config.std is None:
            raise AsitError("frontend.stats: estimate has not been resolved (asit pretrain estimates it from the "
                            "training data); give frontend.mean and frontend.std")

    def load(self, path: str | Path) -> torch.Tensor:
        """File -> mono waveform at the frontend's sample rate."""
        wave, sr = load_audio(path)
        return resample(to_mono(wave), sr, self.config.sample_rate)

    def fbank(self, wave: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) Kaldi log-mel fbank of a mono waveform at `config.sample_rate`.

        The waveform's mean is removed first and clips shorter than one window are zero-padded to one window,
        as the official ASiT/AST code does, so even 10 ms of audio yields a frame.
        """
        return self._kaldi(self._centred(wave))

    def _centred(self, wave: torch.Tensor) -> torch.Tensor:
        """float32 waveform without its mean; refuses what is not finite in float32 (float64 audio beyond ±3.4e38
        would silently become Inf in the cast)."""
        if wave.ndim != 1:
            raise AsitError(f"fbank expects a mono waveform [samples], got shape {tuple(wave.shape)}")
        wave = wave.to(torch.float32)
        if not bool(torch.isfinite(wave).all()):
            raise AsitError("the waveform holds values that are not finite in float32 (NaN, Inf or beyond ±3.4e38)")
        return wave - wave.mean() if wave.numel() else wave

    def _kaldi(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if wave.numel() < cfg.window_samples:
            wave = torch.nn.functional.pad(wave, (0, cfg.window_samples - wave.numel()))
        return torchaudio.compliance.kaldi.fbank(
            wave.unsqueeze(0), htk_compat=True, sample_frequency=cfg.sample_rate, use_energy=False,
            window_type=cfg.window, num_mel_bins=cfg.num_mel_bins, dither=0.0,
            frame_length=cfg.frame_length_ms, frame_shift=cfg.frame_shift_ms)

    def normalise(self, fbank: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return (fbank - cfg.mean) / (cfg.std * cfg.std_scale)  # type: ignore[operator]

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono waveform at `config.sample_rate` -> normalised fbank [frames, mel]."""
        return self.normalise(self.fbank(wave))

    def padded(self, wave: torch.Tensor, frames: int, before: int = 0) -> torch.Tensor:
        """Normalised fbank of a mono waveform with `before` padded frames in front and padded at the end to at
        least `frames` frames in all, the way the encoder's pretraining padded: `silence` zero-pads the raw waveform
        (by `before` hops in front) before its mean is removed and the fbank computed, as the official ASiT pipeline
        does, so frames that straddle the clip's edges hold its first / last samples; `mean` pads the fbank with 0."""
        config = self.config
        if config.pad_with == "silence":
            wave = torch.nn.functional.pad(wave, (before * config.hop_samples, 0))
            missing = config.samples_for(frames) - wave.shape[-1]
            if missing > 0:
                wave = torch.nn.functional.pad(wave, (0, missing))
            return self.normalise(self._kaldi(self._centred(wave)))
        fbank = self(wave)
        fbank = torch.nn.functional.pad(fbank, (0, 0, before, 0), value=config.pad_value)
        return pad_or_crop(fbank, max(frames, fbank.shape[0]), value=config.pad_value)

    def from_file(self, path: str | Path) -> torch.Tensor:
        try:
            return self(self.load(path))
        except AsitError as exc:
            if str(path) in str(exc):
                raise
            raise AsitError(f"audio file {path}: {exc}") from None


STATS_MAX_FILES = 500   # clips `estimate_stats` samples


def estimate_stats(files: list[Path], config: FrontendConfig, max_files: int = STATS_MAX_FILES, seed: int = 0
                   ) -> tuple[float, float]:
    """Mean and std of the raw log-mel fbank over (a seeded sample of at most `max_files` of) the files: the
    normalisation statistics of a frontend for which the paper gives none."""
    if not files:
        raise AsitError("no audio files to estimate the frontend statistics from")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:max_files]
    frontend = Frontend(replace(config, stats="estimate", mean=0.0, std=1.0))
    total, total_sq, count = 0.0, 0.0, 0
    for index in order.tolist():
        fb = frontend.fbank(frontend.load(files[index])).double()
        total += float(fb.sum())
        total_sq += float((fb * fb).sum())
        count += fb.numel()
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    if not std > 0:
        raise AsitError(f"the fbank of the {len(order)} sampled files is constant: cannot normalise by its std")
    return mean, std


def pad_or_crop(features: torch.Tensor, frames: int, offset: int = 0, value: float = 0.0) -> torch.Tensor:
    """[T, ...] -> [frames, ...]: crop starting at `offset`, or pad the end with `value` (for a normalised fbank
    [T, F]: `FrontendConfig.pad_value`, 0 = the dataset mean); also crops waveforms [S]."""
    cropped = features[offset:offset + frames]
    missing = frames - cropped.shape[0]
    if missing > 0:
        cropped = torch.nn.functional.pad(cropped, (0, 0) * (cropped.ndim - 1) + (0, missing), value=value)
    return cropped
