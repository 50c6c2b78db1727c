"""What every dataset reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

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
        """Mono waveform of this example (its segment, if any) at `sample_rate`."""
        wave, sr = load_audio(self.path)
        wave = to_mono(wave)
        if self.start_s or self.duration_s is not None:
            first = int(round(self.start_s * sr))
            last = None if self.duration_s is None else first + int(round(self.duration_s * sr))
            wave = wave[first:last]
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


def check_files_exist(paths: Iterable[Path], source: Path | str) -> None:
    """Every listed file must exist: a silently skipped file would change the split."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise AsitError(f"{len(missing)} audio file(s) listed in {source} are missing, e.g. "
                        f"{', '.join(missing[:3])}")


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise AsitError(f"{what} not found: {path}")
    return path

