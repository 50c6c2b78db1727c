"""Audio for pretraining: a folder or a manifest (optionally labelled) -> fbank crops per clip.

Every random choice of a sample (crop offsets, the objective's masks) comes from a generator seeded with
(seed, epoch, index), delivered by the sampler; so the stream is identical with any number of workers, across
processes, and after a resume.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .audioset_lists import LABELS_CSV, find_clips, read_class_labels, read_datafile, read_segments_csv
from .errors import AsitError
from .fingerprint import FingerprintEntry, describe, fingerprint_entries
from .frontend import Frontend, FrontendConfig, pad_or_crop
from .objectives.base import DataNeeds, ViewTransform
from .pretrain_config import AUDIO_EXTENSIONS, DataConfig
from .workers import resolve_num_workers

__all__ = ["AUDIO_EXTENSIONS", "DataConfig", "ClipList", "list_audio", "list_clips", "clips_fingerprint", "crop_spans",
           "CropViewsDataset", "PretrainDataModule", "EpochSeededSampler"]


@dataclass
class ClipList:
    """The clips a pretraining run reads, with their multi-hot labels when the manifest has them."""

    files: list[Path]
    classes: list[str] | None = None        # label ids (AudioSet mids) in class-index order
    labels: np.ndarray | None = None        # [N, C] float32 multi-hot
    report: dict[str, Any] = field(default_factory=dict)   # listed / found / dropped counts
    root: Path | None = None                # what clip names are relative to in the data fingerprint


def list_audio(source: str | Path, root: str | Path = "", extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Resolve a folder or a manifest to existing audio files; missing files are reported, never skipped."""
    return list_clips(DataConfig(source=str(source), root=str(root), extensions=list(extensions))).files


def list_clips(config: DataConfig) -> ClipList:
    """The data config's clips (and labels when `data.labels`); refuses empty or unreadable listings."""
    if not str(config.source):
        raise AsitError("data.source is empty: give a folder of audio or a manifest (.csv/.json)")
    src = Path(config.source)
    if src.is_dir():
        if config.labels:
            raise AsitError(f"data.labels needs a labelled manifest (AST-style .json, AudioSet segments .csv or a "
                            f".csv with 'wav' and 'labels' columns); data.source {src} is a folder")
        exts = {e.lower() for e in config.extensions}
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise AsitError(f"data.source {src} holds no audio files ({', '.join(sorted(exts))})")
        return ClipList(files, report={"listed": len(files), "found": len(files), "dropped": 0}, root=src)
    if not src.is_file():
        raise AsitError(f"data.source {src} does not exist")
    suffix = src.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise AsitError(f"data.source {src}: manifests must be .csv (column 'wav' or AudioSet segments) or "
                        f"AST-style .json")
    if suffix == ".csv" and _is_segments_csv(src):
        return _segments_clips(src, config)
    base = Path(config.root) if str(config.root) else src.parent
    classes: list[str] | None = None
    if config.labels:
        classes = read_class_labels(_class_list(src, config))[0]
        entries = (read_datafile(src, set(classes)) if suffix == ".json" else _csv_manifest(src, set(classes)))
    else:
        entries = [(Path(w), ()) for w in (_json_wavs(src) if suffix == ".json" else _csv_wavs(src))]
    entries = [(p if p.is_absolute() else base / p, mids) for p, mids in entries]
    return _keep_present(src, entries, classes, config.missing, base)


def _keep_present(src: Path, entries: list[tuple[Path, tuple[str, ...]]], classes: list[str] | None,
                  missing: str, root: Path) -> ClipList:
    present = [(p, mids) for p, mids in entries if p.is_file()]
    absent = [str(p) for p, _ in entries if not p.is_file()]
    if not entries:
        raise AsitError(f"manifest {src} lists no files")
    if absent and (missing == "error" or not present):
        hint = " (none was found)" if not present else " (data.missing: drop leaves absent clips out)"
        raise AsitError(f"{len(absent)} file(s) listed in {src} do not exist, e.g. {', '.join(absent[:3])}{hint}")
    if absent:
        print(f"data: {len(absent)} of the {len(entries)} clips listed in {src} are not stored locally and were "
              f"left out (data.missing: drop)")
    report = {"listed": len(entries), "found": len(present), "dropped": len(absent)}
    return ClipList([p for p, _ in present], classes, _multi_hot(classes, [m for _, m in present]), report, root)


def _multi_hot(classes: list[str] | None, rows: list[tuple[str, ...]]) -> np.ndarray | None:
    if classes is None:
        return None
    index = {mid: i for i, mid in enumerate(classes)}
    out = np.zeros((len(rows), len(classes)), dtype=np.float32)
    for r, mids in enumerate(rows):
        out[r, [index[m] for m in mids]] = 1.0
    return out


def _is_segments_csv(path: Path) -> bool:
    """AudioSet's segment lists start with `# ` comment lines; plain manifests have a header with `wav`."""
    with path.open(newline="") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip().startswith("#")
    return False


def _class_list(manifest: Path, config: DataConfig) -> Path:
    if config.label_csv:
        path = Path(config.label_csv)
        if not path.is_file():
            raise AsitError(f"data.label_csv {path} does not exist")
        return path
    candidates = [manifest.parent / LABELS_CSV, manifest.parent / "metadata" / LABELS_CSV,
                  manifest.parent.parent / "metadata" / LABELS_CSV]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AsitError(f"data.labels: no {LABELS_CSV} beside {manifest} (tried {', '.join(map(str, candidates))}); "
                    f"give data.label_csv")


def _segments_clips(src: Path, config: DataConfig) -> ClipList:
    classes = read_class_labels(_class_list(src, config))[0] if config.labels else None
    segments = {s.ytid: s for s in read_segments_csv(src, set(classes) if classes is not None else None)}
    folder = Path(config.root) if str(config.root) else (src.parent.parent if src.parent.name == "metadata"
                                                         else src.parent)
    clips, wrong = find_clips(folder, segments)
    if wrong:
        raise AsitError(f"{len(wrong)} local clip(s) under {folder} name a listed video but another segment of it, "
                        f"e.g. {'; '.join(wrong[:3])}")
    entries = [(clips[y][0] if y in clips else folder / f"Y{y}.wav", s.labels) for y, s in segments.items()]
    return _keep_present(src, entries, classes, config.missing, folder)


def clips_fingerprint(clips: ClipList, source: str) -> dict[str, Any]:
    """The pretraining data's fingerprint for the exported encoder's meta (`meta["data"]`): clip count and a digest
    of the clip names (relative to the listing's root), sizes and labels. Audio bytes are not read: pretraining
    sets can be terabytes, so the digest misses an edit that keeps a clip's size (the record says so)."""
    names = clips.classes
    rows = clips.labels

    def entry(i: int, path: Path) -> FingerprintEntry:
        if names is None or rows is None:
            return FingerprintEntry.of(path)
        return FingerprintEntry.of(path, labels=[names[c] for c in np.flatnonzero(rows[i])])

    root = clips.root if clips.root is not None else Path(source)
    digest = fingerprint_entries((entry(i, p) for i, p in enumerate(clips.files)), root, content=False)
    return {"source": str(source), "clips": len(clips.files), "digest": digest, "content": describe(False)}


def _json_wavs(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
        return [str(item["wav"]) for item in data["data"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise AsitError(f"manifest {path} is not an AST-style datafile {{'data': [{{'wav': ...}}]}} "
                        f"({exc.__class__.__name__}: {exc})") from None


def _csv_wavs(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "wav" not in reader.fieldnames:
            raise AsitError(f"manifest {path} needs a 'wav' column; found {reader.fieldnames}")
        return [row["wav"] for row in reader]


def _csv_manifest(path: Path, known: set[str]) -> list[tuple[Path, tuple[str, ...]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"wav", "labels"} <= set(reader.fieldnames):
            raise AsitError(f"manifest {path} needs 'wav' and 'labels' columns for data.labels; found "
                            f"{reader.fieldnames}")
        out = []
        for line, row in enumerate(reader, start=2):
            mids = tuple(m.strip() for m in (row["labels"] or "").split(",") if m.strip())
            unknown = [m for m in mids if m not in known]
            if not mids or unknown:
                raise AsitError(f"{path} line {line}: labels {row['labels']!r} must be ids from the class list "
                                f"(unknown: {', '.join(unknown) or 'none given'})")
            out.append((Path(row["wav"]), mids))
        return out


# ------------------------------------------------------------------------------------------------------ crops

def crop_spans(num_frames: int, crop_frames: int, num_views: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Start frame of each view. `random`: uniform over the offsets that fit (0 when the clip is shorter);
    `loop`: uniform over every frame of the clip (the crop wraps round to the clip's start, as ACM-SSKD's
    "randomly sample the start time and loop"); `none`: 0 (the clip from its start)."""
    if mode == "none":
        return np.zeros(num_views, dtype=np.int64)
    if mode == "loop":
        return rng.integers(0, max(1, num_frames), size=num_views)
    return rng.integers(0, max(0, num_frames - crop_frames) + 1, size=num_views)


def _take(x: torch.Tensor, start: int, length: int, loop: bool, fill: float = 0.0) -> torch.Tensor:
    """`length` items of x along dim 0 from `start`, wrapping round when `loop`, else padded at the end with `fill`."""
    if loop and x.shape[0] > 0:
        return x[(start + torch.arange(length)) % x.shape[0]]
    return pad_or_crop(x, length, start, value=fill)


class EpochSeededSampler(DistributedSampler):
    """DistributedSampler whose items are (index, epoch): the dataset seeds its randomness from them."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        for index in super().__iter__():
            yield index, self.epoch


class CropViewsDataset(Dataset):
    """Per clip: `views` [V, 1, crop, F]; `labels` [C] when the list has them; `waves` [V, S] when asked for, the
    samples of exactly each view's frames (S = (crop − 1)·hop + window), zero-padded or wrapped like the views."""

    def __init__(self, clips: ClipList | Sequence[Path], frontend: FrontendConfig, crop_frames: int, num_views: int,
                 seed: int, view_transform: ViewTransform | None = None, crop_mode: str = "random",
                 waves: bool = False) -> None:
        self.clips = clips if isinstance(clips, ClipList) else ClipList(list(clips))
        self.files = self.clips.files
        self.frontend = Frontend(frontend)
        self.crop_frames = crop_frames
        self.num_views = num_views
        self.seed = seed
        self.view_transform = view_transform
        self.crop_mode = crop_mode
        self.waves = waves

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        rng = np.random.default_rng([self.seed, epoch, index])
        wave = self.frontend.load(self.files[index])
        features = self.frontend(wave)
        starts = crop_spans(features.shape[0], self.crop_frames, self.num_views, self.crop_mode, rng)
        loop = self.crop_mode == "loop"
        # clips shorter than a crop are padded with the frontend's pad_with (default: 0, the normalised mean), as
        # evaluation pads them
        fill = self.frontend.config.pad_value
        views = torch.stack([_take(features, int(s), self.crop_frames, loop, fill) for s in starts]).unsqueeze(1)
        sample: dict[str, torch.Tensor] = {"views": views}
        if self.clips.labels is not None:
            sample["labels"] = torch.from_numpy(self.clips.labels[index])
        if self.waves:
            cfg = self.frontend.config
            length = (self.crop_frames - 1) * cfg.hop_samples + cfg.window_samples
            sample["waves"] = torch.stack([_take(wave, int(s) * cfg.hop_samples, length, loop) for s in starts])
        if self.view_transform is not None:
            sample.update(self.view_transform(sample, rng))
        return sample


def check_data_needs(config: DataConfig, needs: DataNeeds, objective: str) -> None:
    """The data config must deliver what the objective trains on: refused here, before any clip is read."""
    if needs.num_views is not None and config.num_views != needs.num_views:
        raise AsitError(f"objective {objective} trains on {needs.num_views} view(s) per clip; set data.num_views: "
                        f"{needs.num_views} (got {config.num_views})")
    if needs.labels and not config.labels:
        raise AsitError(f"objective {objective} trains on clip labels; set data.labels: true and give a labelled "
                        f"manifest as data.source")


class PretrainDataModule(L.LightningDataModule):
    def __init__(self, config: DataConfig, frontend: FrontendConfig, seed: int,
                 view_transform: ViewTransform | None = None, needs: DataNeeds | None = None) -> None:
        super().__init__()
        self.config = config
        self.frontend = frontend
        self.seed = seed
        self.view_transform = view_transform
        self.needs = needs or DataNeeds()
        self.dataset: CropViewsDataset | None = None
        self.data_fingerprint: dict[str, Any] | None = None    # set by setup: the export's meta["data"]

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            cfg = self.config
            clips = list_clips(cfg)
            if self.needs.num_classes is not None and clips.classes is not None \
                    and len(clips.classes) != self.needs.num_classes:
                raise AsitError(f"the class list of {cfg.source} has {len(clips.classes)} classes but the objective's "
                                f"classifier was built for {self.needs.num_classes}; set its num_classes to "
                                f"{len(clips.classes)}")
            self.data_fingerprint = clips_fingerprint(clips, cfg.source)
            self.dataset = CropViewsDataset(clips, self.frontend, cfg.crop_frames, cfg.num_views, self.seed,
                                            self.view_transform, cfg.crop_mode, self.needs.waves)

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
                          num_workers=resolve_num_workers(self.config.num_workers, "data.num_workers",
                                                          processes=trainer.num_devices if trainer is not None else 1),
                          persistent_workers=False,
                          pin_memory=torch.cuda.is_available())
