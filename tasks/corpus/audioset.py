"""AudioSet (AS-20K-style) layout, as PANNs' downloader leaves it (audioset_tagging_cnn/scripts/1_download_dataset.sh):

    audioset/metadata/balanced_train_segments.csv     `# ` header lines, then YTID, start, end, "mid1,mid2"
    audioset/metadata/eval_segments.csv
    audioset/metadata/class_labels_indices.csv        index,mid,display_name
    audioset/audios/balanced_train_segments/Y{YTID}.wav   (32 kHz mono, like PANNs' ffmpeg call)
    audioset/audios/eval_segments/Y{YTID}.wav

Multi-label: every clip mixes 1–3 of the synthetic sound recipes over a noise floor; its labels are the real
AudioSet mids of those sounds (plus "Music" whenever the plucked melody plays, as AudioSet labels parents too).
Real clips are 10 s; these are 3 s (the CSV rows say so) to keep CPU tests fast. A few listed rows have no clip, as
on every real AudioSet copy (videos taken down): readers must report them, not trip over them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sounds, synth
from .writer import ClipWriter, rng_for

DATASET_DIR = "audioset"
SAMPLE_RATE = 32000
CLIP_SECONDS = 3
TRAIN_CLIPS, EVAL_CLIPS = 48, 24               # listed rows per split
TAKEN_DOWN = {"train": 3, "eval": 1}           # listed rows without a local clip
SPLIT_FILES = {"train": "balanced_train_segments", "eval": "eval_segments"}
YTID_ALPHABET = string.ascii_letters + string.digits + "-_"

# (real index, mid, display name) from the real class_labels_indices.csv, in its order; re-indexed 0..N-1 here.
CLASSES: tuple[tuple[int, str, str], ...] = (
    (137, "/m/04rlf", "Music"),
    (139, "/m/0fx80y", "Plucked string instrument"),
    (343, "/m/02mk9", "Engine"),
    (481, "/m/02fs_r", "Beep, bleep"),
    (491, "/m/07qc9xj", "Clicking"),
    (503, "/m/0hdsk", "Chirp tone"),
    (521, "/m/0cj0r", "Pink noise"),
)
# sound recipe -> the mids it is labelled with
RECIPE_LABELS: dict[str, tuple[str, ...]] = {
    "pluck_melody": ("/m/04rlf", "/m/0fx80y"),
    "engine_hum": ("/m/02mk9",),
    "tone_beeps": ("/m/02fs_r",),
    "click_train": ("/m/07qc9xj",),
    "rising_chirp": ("/m/0hdsk",),
    "pink_noise_burst": ("/m/0cj0r",),
}
RECIPES: tuple[str, ...] = tuple(RECIPE_LABELS)


@dataclass(frozen=True)
class AudioSetClip:
    split: str                     # "train" | "eval"
    ytid: str
    start_s: float
    recipes: tuple[str, ...]
    stored: bool                   # False: listed but "taken down" (no local file)

    @property
    def labels(self) -> tuple[str, ...]:
        mids = {m for r in self.recipes for m in RECIPE_LABELS[r]}
        return tuple(mid for _, mid, _ in CLASSES if mid in mids)   # class-list order, like the real CSVs

    @property
    def filename(self) -> str:
        return f"Y{self.ytid}.wav"

    def row(self) -> str:
        return f'{self.ytid}, {self.start_s:.3f}, {self.start_s + CLIP_SECONDS:.3f}, "{",".join(self.labels)}"'


def plan_clips(seed: int) -> list[AudioSetClip]:
    """Every listed clip; the first recipe cycles through all recipes so each class appears in both splits."""
    rng = rng_for(seed, "audioset", "plan")
    taken: set[str] = set()
    clips = []
    for split, count in (("train", TRAIN_CLIPS), ("eval", EVAL_CLIPS)):
        down = set(rng.choice(count, TAKEN_DOWN[split], replace=False).tolist())
        for i in range(count):
            while True:
                ytid = "".join(rng.choice(list(YTID_ALPHABET), 11))
                if ytid not in taken:
                    taken.add(ytid)
                    break
            others = [r for r in RECIPES if r != RECIPES[i % len(RECIPES)]]
            extra = rng.choice(others, int(rng.integers(0, 3)), replace=False).tolist()
            clips.append(AudioSetClip(split, ytid, float(10 * rng.integers(0, 30)),
                                      (RECIPES[i % len(RECIPES)], *extra), i not in down))
    return clips


def render_clip(seed: int, clip: AudioSetClip) -> np.ndarray:
    """The clip's events at random times and levels (each at least 1 s long) over a coloured noise floor."""
    rng = rng_for(seed, "audioset", clip.ytid)
    n = CLIP_SECONDS * SAMPLE_RATE
    audio = np.zeros(n, np.float32)
    for recipe in clip.recipes:
        length = rng.uniform(1.0, CLIP_SECONDS)
        event = sounds.SCENE_RECIPES[recipe](rng, rng, length, SAMPLE_RATE)
        event = event / (synth.rms(event) + 1e-9)
        synth.add_at(audio, event, int(rng.uniform(0.0, CLIP_SECONDS - length) * SAMPLE_RATE), rng.uniform(0.5, 1.0))
    audio = sounds.with_background(audio, rng, snr_db=(15.0, 30.0))
    return synth.normalize_peak(synth.fade(audio, SAMPLE_RATE, 0.005), rng.uniform(0.3, 0.9))


def write_segments(path: Path, clips: list[AudioSetClip]) -> None:
    """The real header: creation line, counts line, column line (each starting with `# `)."""
    labels = {m for c in clips for m in c.labels}
    lines = ["# Segments csv created by asit-hear's embedded corpus (synthetic audio)",
             f"# num_ytids={len(clips)}, num_segs={len(clips)}, num_unique_labels={len(labels)}, "
             f"num_positive_labels={sum(len(c.labels) for c in clips)}",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines + [c.row() for c in clips]) + "\n")


def write_class_labels(path: Path) -> None:
    rows = ["index,mid,display_name"] + [f'{i},{mid},"{name}"' for i, (_, mid, name) in enumerate(CLASSES)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def generate(out_dir: Path, seed: int, writer: ClipWriter) -> dict[str, Path]:
    """Write the metadata now and queue the stored clips on `writer`; returns {"audioset": dataset root}."""
    root = out_dir / DATASET_DIR
    clips = plan_clips(seed)
    write_class_labels(root / "metadata" / "class_labels_indices.csv")
    for split, stem in SPLIT_FILES.items():
        mine = [c for c in clips if c.split == split]
        write_segments(root / "metadata" / f"{stem}.csv", mine)
        for clip in mine:
            if clip.stored:
                writer.submit(root / "audios" / stem / clip.filename, SAMPLE_RATE,
                              lambda clip=clip: render_clip(seed, clip), length=CLIP_SECONDS * SAMPLE_RATE)
    return {"audioset": root}
