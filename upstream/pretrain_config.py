"""Pretraining configuration as data: what `asit pretrain NAME key=value …` reads. No Lightning, no objective code,
so checkpoint readers and tools can load a run's config without importing the training stack."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from .config import deep_merge, from_dict, load_config_file, parse_overrides
from .encoders import EncoderConfig, encoder_config_from_dict
from .errors import AsitError
from .frontend import FrontendConfig
from .workers import resolve_num_workers

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
CROP_MODES = ("random", "loop", "none")
MISSING_POLICIES = ("error", "drop")


@dataclass(frozen=True)
class DataConfig:
    source: str = ""            # folder (searched recursively) or manifest: .csv (column `wav`, optional `labels`),
                                # an AudioSet segments .csv, or an AST-style .json datafile
    root: str = ""              # base for relative manifest paths (default: the manifest's folder); for AudioSet
                                # segment CSVs the folder searched for the clips (default: the dataset root)
    crop_frames: int = 592      # 5.92 s at a 10 ms hop
    crop_mode: str = "random"   # random offset | loop (random start, wrapping round the clip) | none (from 0)
    num_views: int = 2          # crops per clip
    labels: bool = False        # multi-hot clip labels from the manifest (AST `labels`, AudioSet CSV mids)
    label_csv: str = ""         # class_labels_indices.csv (default: beside the manifest or in a metadata/ folder)
    missing: str = "error"      # listed clips absent locally: error | drop (counted and printed; AudioSet's norm)
    batch_size: int = 40        # per process
    num_workers: int | str = "auto"   # DataLoader workers: auto = min(8, usable cores - 1) | a whole number
    extensions: list[str] = field(default_factory=lambda: list(AUDIO_EXTENSIONS))

    def check(self) -> None:
        if self.crop_mode not in CROP_MODES:
            raise AsitError(f"data.crop_mode must be one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}")
        if self.missing not in MISSING_POLICIES:
            raise AsitError(f"data.missing must be one of {', '.join(MISSING_POLICIES)}, got {self.missing!r}")
        if self.num_views < 1 or self.crop_frames < 1 or self.batch_size < 1:
            raise AsitError("data.num_views, data.crop_frames and data.batch_size must be positive, got "
                            f"{self.num_views}, {self.crop_frames}, {self.batch_size}")
        resolve_num_workers(self.num_workers, "data.num_workers")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4               # per 256 samples: the effective lr is lr × global batch / 256 (DINO rule)
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04     # cosine to weight_decay_end
    weight_decay_end: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 3.0         # total-norm clipping (0 disables)
    schedule: str = "cosine"       # lr after warm-up: cosine to min_lr | linear to min_lr (timm PolyLRScheduler)
    warmup_steps: int = 0          # > 0: warm-up length in optimizer steps instead of warmup_epochs


@dataclass(frozen=True)
class TrainerConfig:
    max_epochs: int = 100
    max_steps: int = -1            # > 0: stop after this many optimizer steps (schedules span them)
    max_time: str = ""             # time budget: "DD:HH:MM:SS" or minutes ("90", "2.5"); "" none. The schedules
                                   # then span the steps estimated to fit it (budget_probe_steps, docs/pretraining.md)
    budget_probe_steps: int = 20   # with max_time: steps timed before the schedules' length is fixed
    progress_every_s: float = 60.0  # progress line (step/total, loss, elapsed, ETA) within an epoch every this many
                                    # seconds, besides the one at each epoch end (0: epoch ends only)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"     # "bf16-mixed" for bf16 autocast
    log_every_n_steps: int = 10
    limit_train_batches: int | float | None = None
    checkpoint_every_n_steps: int = 0   # extra mid-epoch checkpoints (0: only at epoch ends)
    enable_progress_bar: bool = True
    compile: bool = False          # regional torch.compile of the encoders' blocks; off: measured slower or equal
                                   # on the CPU (docs/performance.md, "Pretraining step")

    def check(self) -> None:
        if self.max_steps == 0 or self.max_steps < -1:
            raise AsitError(f"trainer.max_steps must be -1 (no limit) or positive, got {self.max_steps}")
        if self.max_epochs < 1:
            raise AsitError(f"trainer.max_epochs must be positive, got {self.max_epochs}")
        parse_max_time(self.max_time)
        if self.budget_probe_steps < 1:
            raise AsitError(f"trainer.budget_probe_steps must be positive, got {self.budget_probe_steps}")
        if self.progress_every_s < 0:
            raise AsitError(f"trainer.progress_every_s must be >= 0, got {self.progress_every_s}")


def parse_max_time(value: str) -> timedelta | None:
    """`trainer.max_time` -> a duration: "DD:HH:MM:SS" (Lightning's format) or a number of minutes; "" -> None."""
    text = str(value).strip()
    if not text:
        return None
    try:
        if ":" in text:
            days, hours, minutes, seconds = (float(part) for part in text.split(":"))
            duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        else:
            duration = timedelta(minutes=float(text))
    except ValueError:
        duration = None
    if duration is None or duration.total_seconds() <= 0:
        raise AsitError(f"trainer.max_time must be DD:HH:MM:SS or a positive number of minutes, got {value!r}")
    return duration


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    run_dir: str = "runs/pretrain"
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: Any = field(default_factory=EncoderConfig)     # any registered arch's config (`encoder.arch`)
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "asit"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def load_pretrain_config_dict(data: Mapping[str, Any]) -> PretrainConfig:
    config = from_dict(PretrainConfig, data)
    encoder = encoder_config_from_dict(config.encoder)
    config.data.check()
    config.trainer.check()
    frames = config.data.crop_frames
    if frames % encoder.frames_per_step:
        raise AsitError(f"data.crop_frames {frames} must be a multiple of the {encoder.arch} encoder's "
                        f"{encoder.frames_per_step} frames per step")
    if config.optim.schedule not in ("cosine", "linear"):
        raise AsitError(f"optim.schedule must be cosine or linear, got {config.optim.schedule!r}")
    if config.frontend.num_mel_bins != encoder.num_mel_bins:
        raise AsitError(f"frontend.num_mel_bins {config.frontend.num_mel_bins} differs from encoder.num_mel_bins "
                        f"{encoder.num_mel_bins}")
    return dataclasses.replace(config, encoder=encoder)


def load_pretrain_config(name_or_path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """A shipped config name or a YAML file, then `key.sub=value` overrides."""
    data = load_config_file(name_or_path, "pretrain")
    return load_pretrain_config_dict(deep_merge(data, parse_overrides(overrides or [])))
