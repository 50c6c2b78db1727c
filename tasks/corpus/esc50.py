"""ESC-50 layout: `ESC-50-master/audio/{fold}-{src}-{take}-{target}.wav` (5 s, 44.1 kHz) + `meta/esc50.csv`.

Five synthetic classes stand in for the real fifty. Per class and fold there are two clips: either one source file
with takes A and B, or two source files with take A (alternating), so the "a source file never spans two folds"
rule of the real dataset is exercised both ways. 5 classes × 5 folds × 2 = 50 clips.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sounds, synth
from .writer import ClipWriter, rng_for

DATASET_DIR = "ESC-50-master"
SAMPLE_RATE = 44100
CLIP_SECONDS = 5
FOLDS: tuple[int, ...] = (1, 2, 3, 4, 5)
CATEGORIES: tuple[str, ...] = tuple(sounds.ESC_RECIPES)
# The real esc10 column flags a 10-class subset; here the two most "natural" synthetic classes play that role.
ESC10_CATEGORIES: frozenset[str] = frozenset({"rising_chirp", "engine_hum"})
CSV_HEADER: tuple[str, ...] = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


@dataclass(frozen=True)
class EscClip:
    """One row of esc50.csv."""

    fold: int
    src_file: str
    take: str
    target: int

    @property
    def category(self) -> str:
        return CATEGORIES[self.target]

    @property
    def esc10(self) -> bool:
        return self.category in ESC10_CATEGORIES

    @property
    def filename(self) -> str:
        return f"{self.fold}-{self.src_file}-{self.take}-{self.target}.wav"

    def row(self) -> list[str]:
        return [self.filename, str(self.fold), str(self.target), self.category, str(self.esc10), self.src_file,
                self.take]


def plan_clips(seed: int) -> list[EscClip]:
    """All clips, sorted by filename like the real CSV. Source ids are unique numeric strings (freesound-like)."""
    rng = rng_for(seed, "esc50", "plan")
    groups = [(fold, target) for fold in FOLDS for target in range(len(CATEGORIES))]
    sources_needed = sum(1 if (fold + target) % 2 == 0 else 2 for fold, target in groups)
    src_ids = iter(str(int(i)) for i in rng.choice(np.arange(10_000, 300_000), sources_needed, replace=False))
    clips: list[EscClip] = []
    for fold, target in groups:
        if (fold + target) % 2 == 0:
            src = next(src_ids)
            clips += [EscClip(fold, src, "A", target), EscClip(fold, src, "B", target)]
        else:
            clips += [EscClip(fold, next(src_ids), "A", target), EscClip(fold, next(src_ids), "A", target)]
    return sorted(clips, key=lambda clip: clip.filename)


def render_clip(seed: int, clip: EscClip) -> np.ndarray:
    """The class recipe with source-level parameters shared by all takes, plus a light noise floor."""
    params = rng_for(seed, "esc50", clip.src_file, "params")
    detail = rng_for(seed, "esc50", clip.src_file, clip.take)
    event = sounds.ESC_RECIPES[clip.category](params, detail, CLIP_SECONDS, SAMPLE_RATE)
    audio = sounds.with_background(event, detail, snr_db=(20.0, 35.0))
    return synth.normalize_peak(synth.fade(audio, SAMPLE_RATE, 0.005), detail.uniform(0.3, 0.9))


def write_csv(path: Path, clips: list[EscClip]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(CSV_HEADER)
        out.writerows(clip.row() for clip in clips)


def generate(out_dir: Path, seed: int, writer: ClipWriter) -> dict[str, Path]:
    """Write the CSV now and queue the clips on `writer`; returns {"esc50": dataset root}."""
    root = out_dir / DATASET_DIR
    clips = plan_clips(seed)
    write_csv(root / "meta" / "esc50.csv", clips)
    for clip in clips:
        writer.submit(root / "audio" / clip.filename, SAMPLE_RATE,
                      lambda clip=clip: render_clip(seed, clip), length=CLIP_SECONDS * SAMPLE_RATE)
    return {"esc50": root}
