"""Unlabelled audio for pretraining: a folder or a manifest -> two random fbank crops per clip.

Every random choice of a sample (crop offsets, the objective's masks) comes from a generator seeded with
(seed, epoch, index), delivered by the sampler; so the stream is identical with any number of workers, across
processes, and after a resume.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .errors import AsitError
from .frontend import Frontend, FrontendConfig, pad_or_crop
from .objectives.base import ViewTransform

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclass(frozen=True)
class DataConfig:
    source: str = ""            # folder (searched recursively) or manifest: .csv (column `wav`) / AST .json
    root: str = ""              # base for relative manifest paths (default: the manifest's folder)
    crop_frames: int = 592      # 5.92 s at a 10 ms hop
    num_views: int = 2
    batch_size: int = 40        # per process
    num_workers: int = 4
    extensions: list[str] = field(default_factory=lambda: list(AUDIO_EXTENSIONS))


def list_audio(source: str | Path, root: str | Path = "", extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Resolve a folder or a manifest to existing audio files; missing files are reported, never skipped."""
    if not str(source):
        raise AsitError("data.source is empty: give a folder of audio or a manifest (.csv/.json)")
    src = Path(source)
    if src.is_dir():
        exts = {e.lower() for e in extensions}
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise AsitError(f"data.source {src} holds no audio files ({', '.join(sorted(exts))})")
        return files
    if not src.is_file():
        raise AsitError(f"data.source {src} does not exist")
    base = Path(root) if str(root) else src.parent
    if src.suffix.lower() == ".json":
        entries = _json_manifest(src)
    elif src.suffix.lower() == ".csv":
        entries = _csv_manifest(src)
    else:
        raise AsitError(f"data.source {src}: manifests must be .csv (column 'wav') or AST-style .json")
    files = [p if p.is_absolute() else base / p for p in map(Path, entries)]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise AsitError(f"{len(missing)} file(s) listed in {src} do not exist, e.g. {', '.join(missing[:3])}")
    if not files:
        raise AsitError(f"manifest {src} lists no files")
    return files


def _json_manifest(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
        return [str(item["wav"]) for item in data["data"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise AsitError(f"manifest {path} is not an AST-style datafile {{'data': [{{'wav': ...}}]}} "
                        f"({exc.__class__.__name__}: {exc})") from None


def _csv_manifest(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "wav" not in reader.fieldnames:
            raise AsitError(f"manifest {path} needs a 'wav' column; found {reader.fieldnames}")
        return [row["wav"] for row in reader]


class EpochSeededSampler(DistributedSampler):
    """DistributedSampler whose items are (index, epoch): the dataset seeds its randomness from them."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        for index in super().__iter__():
            yield index, self.epoch


class CropViewsDataset(Dataset):
    def __init__(self, files: Sequence[Path], frontend: FrontendConfig, crop_frames: int, num_views: int,
                 seed: int, view_transform: ViewTransform | None = None) -> None:
        self.files = list(files)
        self.frontend = Frontend(frontend)
        self.crop_frames = crop_frames
        self.num_views = num_views
        self.seed = seed
        self.view_transform = view_transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        rng = np.random.default_rng([self.seed, epoch, index])
        features = self.frontend.from_file(self.files[index])
        # clips shorter than a crop are zero-padded (the normalised mean), as evaluation pads them
        spare = max(0, features.shape[0] - self.crop_frames)
        offsets = rng.integers(0, spare + 1, size=self.num_views)
        views = torch.stack([pad_or_crop(features, self.crop_frames, int(o)) for o in offsets]).unsqueeze(1)
        sample = {"views": views}
        if self.view_transform is not None:
            sample.update(self.view_transform(views, rng))
        return sample


class PretrainDataModule(L.LightningDataModule):
    def __init__(self, config: DataConfig, frontend: FrontendConfig, seed: int,
                 view_transform: ViewTransform | None = None) -> None:
        super().__init__()
        self.config = config
        self.frontend = frontend
        self.seed = seed
        self.view_transform = view_transform
        self.dataset: CropViewsDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            cfg = self.config
            files = list_audio(cfg.source, cfg.root, cfg.extensions)
            self.dataset = CropViewsDataset(files, self.frontend, cfg.crop_frames, cfg.num_views, self.seed,
                                            self.view_transform)

    def train_dataloader(self) -> DataLoader:
        assert self.dataset is not None
        trainer = self.trainer
        replicas = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if len(self.dataset) < replicas * self.config.batch_size:
            raise AsitError(f"data.source has {len(self.dataset)} clips, fewer than one batch "
                            f"({self.config.batch_size}) per process ({replicas}); lower data.batch_size")
        sampler = EpochSeededSampler(self.dataset, num_replicas=replicas, rank=rank, shuffle=True,
                                     seed=self.seed, drop_last=True)
        return DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.config.num_workers, persistent_workers=False,
                          pin_memory=torch.cuda.is_available())
