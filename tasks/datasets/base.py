"""What every dataset reader returns, and the checks every reader runs on the audio files it lists."""

from __future__ import annotations

import os
import stat as stat_mode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import soundfile
import torch

from upstream.errors import AsitError, bad_rows  # noqa: F401  (re-exported for the dataset readers)
from upstream.frontend import load_audio, resample, to_mono


@dataclass(frozen=True)
class Example:
    path: Path
    labels: tuple[str, ...]          # one label for single-label tasks, several for AudioSet
    split: str | None = None         # "train" | "valid" | "test" for presplit datasets
    fold: int | None = None          # 1-based fold for cross-validated datasets (ESC-50)
    group: str | None = None         # what must never cross splits: ESC-50 src_file, a speaker id
    start_s: float = 0.0             # segment inside the file (silence crops of background noise)
    duration_s: float | None = None  # None: the whole file

    def load(self, sample_rate: int) -> torch.Tensor:
        """Mono waveform of this example (its segment, if any) at `sample_rate`.

        A file (or segment) without samples, or holding NaN / Inf samples, raises AsitError naming the file: an
        encoder would otherwise turn it into a plausible-looking embedding of padding."""
        wave, sr = load_audio(self.path)
        wave = to_mono(wave)
        if wave.numel() == 0:
            raise AsitError(f"audio file {self.path} holds no samples (0 frames); re-extract or re-download it")
        if self.start_s or self.duration_s is not None:
            first = int(round(self.start_s * sr))
            last = None if self.duration_s is None else first + int(round(self.duration_s * sr))
            total = wave.numel()
            wave = wave[first:last]
            if wave.numel() == 0:
                raise AsitError(f"audio file {self.path} has no samples in the segment starting at {self.start_s:g} s "
                                f"(the file lasts {total / sr:g} s)")
        if not bool(torch.isfinite(wave).all()):
            raise AsitError(f"audio file {self.path} holds NaN or infinite samples")
        return resample(wave, sr, sample_rate)


@dataclass
class DatasetIndex:
    name: str
    root: Path
    examples: list[Example]
    labels: list[str]                # the label vocabulary, in a fixed order (its index is the class id)
    multilabel: bool = False
    folds: list[int] = field(default_factory=list)
    stats: str = "audioset"          # frontend normalisation statistics for this dataset (paper Table I)
    label_names: dict[str, str] = field(default_factory=dict)   # label -> display name (AudioSet mids)
    report: dict[str, Any] = field(default_factory=dict)        # what the reader decided (AudioSet: missing clips)

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def fold(self, number: int) -> list[Example]:
        return [e for e in self.examples if e.fold == number]

    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}


# Files at least this large are taken to hold samples without opening them (a 0-sample WAV is a 44-byte header, a
# 0-sample FLAC at most a few KiB of metadata and padding; 16 KiB of 16-bit PCM is 0.5 s at 16 kHz), so checking a
# dataset of 100k one-second clips costs one stat per file; smaller files are opened to read their frame count.
SMALL_FILE_BYTES = 16 * 1024


def holds_no_samples(path: Path, size: int | None = None) -> bool:
    """Whether an existing audio file holds no samples: 0 bytes, or a small file whose header says 0 frames.
    Files soundfile cannot parse are not judged here (reading them fails later with the file named)."""
    size = os.stat(path).st_size if size is None else size
    if size == 0:
        return True
    if size >= SMALL_FILE_BYTES:
        return False
    try:
        return soundfile.info(str(path)).frames == 0
    except (soundfile.LibsndfileError, RuntimeError, ValueError, OSError):
        return False


def empty_audio_error(empty: list[str], source: Path | str) -> AsitError:
    return AsitError(f"{len(empty)} audio file(s) listed in {source} hold no samples (0 frames), e.g. "
                     f"{', '.join(empty[:3])}; re-extract or re-download them (an empty clip would be embedded as "
                     "padding)")


def check_files_exist(paths: Iterable[Path], source: Path | str) -> None:
    """Every listed file must exist and hold samples: a silently skipped file would change the split, and an empty
    one would be embedded as padding. Missing files are reported first, then empty ones, each with a count and the
    first three paths."""
    missing, empty = [], []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            missing.append(str(path))
            continue
        if not stat_mode.S_ISREG(info.st_mode):
            missing.append(str(path))
        elif holds_no_samples(path, info.st_size):
            empty.append(str(path))
    if missing:
        raise AsitError(f"{len(missing)} audio file(s) listed in {source} are missing, e.g. "
                        f"{', '.join(missing[:3])}")
    if empty:
        raise empty_audio_error(empty, source)


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise AsitError(f"{what} not found: {path}")
    return path

