"""ESC-50 layout from recorded sound effects: `ESC-50-master/audio/{fold}-{src}-{take}-{target}.wav` + meta.

Each catalog class lists recordings (glob patterns per Debian package). A recording is a *source file*: all its
clips (takes A, B, …) go to one fold, as in the real ESC-50, where a freesound recording never spans folds.
Sources are shuffled and dealt round-robin to the folds; each fold then takes `clips_per_class / folds` clips
from its sources, the longer sources first giving a second take when a fold has fewer sources than clips.

A clip is 5 s at 44.1 kHz, built from the source band-limited through `band_limit_rate`:
- *placed*: a source shorter than 5 s after trimming silence sits at a random offset;
- *cropped*: a longer source is cut at a random offset (takes of one source come from different stretches);
- *repeated*: classes with `repeat` (footsteps) place the one recorded event several times at a walking pace.
Every clip gets a low coloured-noise floor (`background_snr_db` below the sound) and a random peak level.
`meta/devsets_sources.csv` says which package file and which of the three a clip is.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tasks.corpus import synth
from tasks.corpus.writer import ClipWriter, rng_for
from upstream.errors import AsitError

from . import sources as src
from .catalog import EscClass, EscConfig
from .sources import Package

DATASET_DIR = "ESC-50-master"
CSV_HEADER: tuple[str, ...] = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
SOURCES_CSV = "devsets_sources.csv"
TAKES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class EscSource:
    """One recording of a class."""

    package: str
    path: Path          # where it is read from
    rel: str            # its path inside the package
    src_file: str       # numeric id (stands for the freesound id of the real dataset)
    seconds: float


@dataclass(frozen=True)
class EscClip:
    fold: int
    target: int
    category: str
    esc10: bool
    source: EscSource
    take_index: int       # 0 for A, 1 for B, …
    takes_of_source: int  # how many clips this source gives

    @property
    def take(self) -> str:
        return TAKES[self.take_index]

    @property
    def filename(self) -> str:
        return f"{self.fold}-{self.source.src_file}-{self.take}-{self.target}.wav"

    def row(self) -> list[str]:
        return [self.filename, str(self.fold), str(self.target), self.category, str(self.esc10),
                self.source.src_file, self.take]


def resolve_sources(config: EscConfig, packages: dict[str, Package]) -> dict[str, list[EscSource]]:
    """Each class's recordings. The same bytes found twice count once; in two classes they are an error."""
    files = src.unique_files(((cls.name, cls.files) for cls in config.classes), packages, "classes")
    by_class: dict[str, list[EscSource]] = {}
    used_ids: set[str] = set()
    for cls in config.classes:
        found = [EscSource(package_name, path, path.relative_to(packages[package_name].root).as_posix(),
                           _src_id(digest, used_ids), _seconds(path))
                 for package_name, path, digest in files[cls.name]]
        if len(found) < config.folds:
            raise AsitError(f"ESC class {cls.name} has {len(found)} source file(s) in "
                            f"{', '.join(cls.files.packages)}; it needs at least {config.folds} (one per fold)")
        by_class[cls.name] = found
    return by_class


def _src_id(digest: str, used: set[str]) -> str:
    """A 6-digit id from the content hash (stable across seeds and machines), unique within the set."""
    value = int(digest[:12], 16)
    while True:
        candidate = str(100000 + value % 900000)
        if candidate not in used:
            used.add(candidate)
            return candidate
        value = int(hashlib.sha256(str(value).encode()).hexdigest()[:12], 16)


def _seconds(path: Path) -> float:
    try:
        info = sf.info(str(path))
        return float(info.frames) / info.samplerate
    except (sf.LibsndfileError, RuntimeError):
        audio, rate = src.read_audio(path)
        return len(audio) / rate


def plan_clips(seed: int, config: EscConfig, by_class: dict[str, list[EscSource]]) -> list[EscClip]:
    """Every clip with its fold and take, sorted by file name like the real esc50.csv."""
    per_fold = config.clips_per_class // config.folds
    clips: list[EscClip] = []
    for target, cls in enumerate(config.classes):
        rng = rng_for(seed, "devsets-esc", "plan", cls.name)
        pool = sorted(by_class[cls.name], key=lambda s: s.rel)
        chosen = [pool[i] for i in rng.permutation(len(pool))][: config.clips_per_class]
        for fold in range(1, config.folds + 1):
            members = sorted(chosen[fold - 1:: config.folds], key=lambda s: (-s.seconds, s.rel))
            counts = [0] * len(members)
            for k in range(per_fold):
                counts[k % len(members)] += 1
            for source, count in zip(members, counts):
                clips += [EscClip(fold, target, cls.name, cls.esc10, source, t, count) for t in range(count)]
    return sorted(clips, key=lambda clip: clip.filename)


def render_clip(seed: int, config: EscConfig, cls: EscClass, clip: EscClip) -> tuple[np.ndarray, str]:
    """The clip's audio and how the source was used ('placed', 'cropped' or 'repeated')."""
    rate, n = config.sample_rate, int(round(config.clip_seconds * config.sample_rate))
    rng = rng_for(seed, "devsets-esc", clip.source.src_file, clip.take)
    sound = synth.trim_silence(src.load(clip.source.path, rate, config.band_limit_rate), rate)
    if len(sound) == 0 or float(np.max(np.abs(sound))) == 0.0:
        raise AsitError(f"{clip.source.path} is silent: remove it from class {cls.name} in the catalog")
    audio = np.zeros(n, np.float32)
    if cls.repeat is not None:
        mode, event = "repeated", synth.fade(sound[: rate], rate, 0.005)
        onset = rng.uniform(0.0, 0.5) * rate
        for _ in range(int(rng.integers(cls.repeat[0], cls.repeat[1] + 1))):
            if onset >= n:
                break
            synth.add_at(audio, event, int(onset), float(rng.uniform(0.6, 1.0)))
            onset += rng.uniform(*cls.repeat_gap_s) * rate
        level = synth.rms(event)
    elif len(sound) <= n:
        mode = "placed"
        synth.add_at(audio, synth.fade(sound, rate, 0.005), int(rng.integers(0, n - len(sound) + 1)))
        level = synth.rms(sound)
    else:
        mode = "cropped"
        span = (len(sound) - n) / clip.takes_of_source   # takes of one source come from different stretches
        start = int((clip.take_index + rng.uniform()) * span)
        audio = np.array(sound[start: start + n], dtype=np.float32)
        level = synth.rms(audio)
    audio = audio + _floor(rng, config, n) * level / 10 ** (rng.uniform(*config.background_snr_db) / 20)
    audio = synth.fade(audio, rate, 0.005)
    return synth.normalize_peak(audio, rng.uniform(*config.peak)), mode


def _floor(rng: np.random.Generator, config: EscConfig, n: int) -> np.ndarray:
    """Unit-RMS coloured noise (white … brown), band-limited like the sounds."""
    exponent = rng.uniform(0.0, 2.0)
    band = config.band_limit_rate or config.sample_rate
    if band >= config.sample_rate:
        return synth.colored_noise(rng, n, exponent)
    noise = src.resample(synth.colored_noise(rng, int(np.ceil(n * band / config.sample_rate)) + 64, exponent),
                           band, config.sample_rate)[:n]
    if len(noise) < n:
        noise = np.pad(noise, (0, n - len(noise)))
    return noise / (synth.rms(noise) + 1e-12)


def generate(out_dir: Path, seed: int, config: EscConfig, packages: dict[str, Package],
             writer: ClipWriter) -> dict[str, object]:
    """Write meta/esc50.csv now and queue the clips; returns a summary for the manifest."""
    root = out_dir / DATASET_DIR
    by_class = resolve_sources(config, packages)
    clips = plan_clips(seed, config, by_class)
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    with (meta / "esc50.csv").open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(CSV_HEADER)
        out.writerows(clip.row() for clip in clips)
    classes = {cls.name: cls for cls in config.classes}
    modes: dict[str, str] = {}

    def render(clip: EscClip) -> np.ndarray:
        audio, modes[clip.filename] = render_clip(seed, config, classes[clip.category], clip)
        return audio

    for clip in clips:
        writer.submit(root / "audio" / clip.filename, config.sample_rate, lambda clip=clip: render(clip),
                      length=int(round(config.clip_seconds * config.sample_rate)))

    def write_sources() -> None:   # after the writer has rendered every clip (modes are known then)
        with (meta / SOURCES_CSV).open("w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(["filename", "category", "package", "source", "placement"])
            out.writerows([c.filename, c.category, c.source.package, c.source.rel, modes[c.filename]]
                          for c in clips)

    return {"root": root, "finish": write_sources, "clips": len(clips), "classes": [c.name for c in config.classes],
            "sources": sum(len({c.source.src_file for c in clips if c.category == cls.name}) for cls in
                           config.classes)}
