"""VoxCeleb1 identification layout from recorded speakers: `VoxCeleb1/wav/idXXXXX/<video>/<nnnnn>.wav` (16 kHz)
+ `VoxCeleb1/iden_split.txt` (`1|2|3 idXXXXX/<video>/<nnnnn>.wav`), as `tasks.datasets.read_voxceleb1` reads it.

A catalog speaker is one real person's recordings (prompts, words, letters). An *utterance* joins a few of them,
trimmed of silence, with short pauses, until a drawn length (3-6 s) is reached; no recording is used twice, so no
audio is shared between train and test. A speaker's utterances are dealt over its "videos" (11-character
YouTube-like ids); each video has its own fixed channel (microphone tilt, noise colour and level), so, as in the
real data, the utterances of one video share a recording condition. Per speaker, `split_counts` utterances are
validation (2) and test (3), the rest train (1), drawn across videos. Speaker ids (`id10001`, … consecutive, as
s3prl derives labels from them) are dealt in a seeded order, so an id says nothing about the source.
"""

from __future__ import annotations

import csv
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.corpus import synth
from tasks.corpus.writer import ClipWriter, default_workers, rng_for
from upstream.errors import AsitError

from . import sources as src
from .catalog import VoxConfig, VoxSpeaker
from .sources import Package

DATASET_DIR = "VoxCeleb1"
FIRST_SPEAKER_ID = 10001
VIDEO_ID_ALPHABET = string.ascii_letters + string.digits + "-_"
SOURCES_CSV = "devsets_sources.csv"


@dataclass(frozen=True)
class Item:
    package: str
    path: Path
    rel: str


@dataclass
class Utterance:
    speaker: str          # catalog name
    speaker_id: str       # id10001 …
    video: str
    utterance: str        # 00001.wav …
    split: int
    items: list[Item]
    audio: np.ndarray

    @property
    def relpath(self) -> str:
        return f"{self.speaker_id}/{self.video}/{self.utterance}"


def resolve_items(config: VoxConfig, packages: dict[str, Package]) -> dict[str, list[Item]]:
    """Each speaker's recordings; identical bytes count once, and may not belong to two speakers."""
    files = src.unique_files(((s.name, s.files) for s in config.speakers), packages, "speakers")
    found: dict[str, list[Item]] = {}
    for speaker in config.speakers:
        items = [Item(package_name, path, path.relative_to(packages[package_name].root).as_posix())
                 for package_name, path, _ in files[speaker.name]]
        if not items:
            raise AsitError(f"VoxCeleb speaker {speaker.name} matches no file in {', '.join(speaker.files.packages)}")
        found[speaker.name] = items
    return found


def speaker_ids(seed: int, config: VoxConfig) -> dict[str, str]:
    order = rng_for(seed, "devsets-vox", "ids").permutation(len(config.speakers))
    return {config.speakers[i].name: f"id{FIRST_SPEAKER_ID + k}" for k, i in enumerate(order)}


def build_speaker(seed: int, config: VoxConfig, speaker: VoxSpeaker, speaker_id: str, items: list[Item],
                  videos: list[str]) -> list[Utterance]:
    """All utterances of one speaker (decodes only the recordings it needs, in a seeded order)."""
    rate = config.sample_rate
    rng = rng_for(seed, "devsets-vox", speaker.name)
    lo, hi = (int(s * rate) for s in config.utterance_seconds)
    groups: list[list[tuple[Item, np.ndarray]]] = []
    current: list[tuple[Item, np.ndarray]] = []
    length, target = 0, int(rng.uniform(lo, hi))
    for index in rng.permutation(len(items)):
        item = items[int(index)]
        sound = synth.trim_silence(src.load(item.path, rate), rate)
        if not config.item_seconds[0] * rate <= len(sound) <= config.item_seconds[1] * rate:
            continue
        joined = length + (int(config.gap_s[1] * rate) if current else 0) + len(sound)
        if current and joined > hi:
            if length < lo:
                continue          # does not fit: keep filling this utterance with shorter recordings
            groups.append(current)
            current, length, target = [], 0, int(rng.uniform(lo, hi))
        length += (int(config.gap_s[1] * rate) if current else 0) + len(sound)
        current.append((item, sound))
        if length >= target:
            groups.append(current)
            current, length, target = [], 0, int(rng.uniform(lo, hi))
        if len(groups) == config.utterances_per_speaker:
            break
    if current and length >= lo and len(groups) < config.utterances_per_speaker:
        groups.append(current)
    needed = sum(config.split_counts.values()) + 1
    if len(groups) < needed:
        raise AsitError(f"VoxCeleb speaker {speaker.name} has audio for {len(groups)} utterance(s) of "
                        f"{config.utterance_seconds[0]:g}+ s; at least {needed} are needed: remove it from the "
                        "catalog or add files")
    splits = [code for code, count in sorted(config.split_counts.items()) for _ in range(count)]
    splits = np.array(splits + [1] * (len(groups) - len(splits)))[rng.permutation(len(groups))]
    channels = [_channel(seed, config, speaker.name, video) for video in videos]
    numbers = [0] * len(videos)
    utterances = []
    for k, group in enumerate(groups):
        v = k % len(videos)
        numbers[v] += 1
        audio = _render(rng, config, [sound for _, sound in group], channels[v])
        utterances.append(Utterance(speaker.name, speaker_id, videos[v], f"{numbers[v]:05d}.wav", int(splits[k]),
                                    [item for item, _ in group], audio))
    return utterances


@dataclass(frozen=True)
class _Channel:
    tilt: float
    colour: float
    snr_db: float


def _channel(seed: int, config: VoxConfig, speaker: str, video: str) -> _Channel:
    rng = rng_for(seed, "devsets-vox", speaker, video, "channel")
    return _Channel(float(rng.uniform(*config.channel_tilt_db_per_octave)), float(rng.uniform(0.0, 2.0)),
                    float(rng.uniform(*config.channel_snr_db)))


def _render(rng: np.random.Generator, config: VoxConfig, sounds: list[np.ndarray], channel: _Channel) -> np.ndarray:
    """Recordings joined by short pauses, a little lead-in and tail, through the video's channel."""
    rate = config.sample_rate
    parts = [np.zeros(int(rng.uniform(0.1, 0.3) * rate), np.float32)]
    for i, sound in enumerate(sounds):
        if i:
            parts.append(np.zeros(int(rng.uniform(*config.gap_s) * rate), np.float32))
        parts.append(synth.fade(sound, rate, 0.005))
    parts.append(np.zeros(int(rng.uniform(0.1, 0.3) * rate), np.float32))
    speech = np.concatenate(parts)
    level = float(np.sqrt(np.mean(np.concatenate([synth.fade(s, rate, 0.005) for s in sounds]) ** 2)))
    noise = synth.colored_noise(rng, len(speech), channel.colour)
    snr = channel.snr_db + rng.uniform(-2.0, 2.0)
    audio = synth.spectral_tilt(speech + noise * level / 10 ** (snr / 20), rate, channel.tilt)
    return synth.normalize_peak(audio, rng.uniform(*config.peak))


def _video_ids(seed: int, count: int) -> list[str]:
    rng, taken, out = rng_for(seed, "devsets-vox", "videos"), set(), []
    while len(out) < count:
        video = "".join(VIDEO_ID_ALPHABET[i] for i in rng.integers(0, len(VIDEO_ID_ALPHABET), 11))
        if video not in taken:
            taken.add(video)
            out.append(video)
    return out


def generate(out_dir: Path, seed: int, config: VoxConfig, packages: dict[str, Package], writer: ClipWriter,
             workers: int | None = None) -> dict[str, object]:
    """Build every speaker (in parallel; each from its own generator), write iden_split.txt and queue the wavs."""
    root = out_dir / DATASET_DIR
    items = resolve_items(config, packages)
    ids = speaker_ids(seed, config)
    by_id = sorted(config.speakers, key=lambda s: ids[s.name])
    all_videos = _video_ids(seed, len(by_id) * config.videos_per_speaker)
    videos = {s.name: all_videos[i * config.videos_per_speaker:(i + 1) * config.videos_per_speaker]
              for i, s in enumerate(by_id)}
    with ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="devsets-vox") as pool:
        futures = [pool.submit(build_speaker, seed, config, s, ids[s.name], items[s.name], videos[s.name])
                   for s in by_id]
        utterances = sorted((u for f in futures for u in f.result()), key=lambda u: u.relpath)
    root.mkdir(parents=True, exist_ok=True)
    (root / "iden_split.txt").write_text("".join(f"{u.split} {u.relpath}\n" for u in utterances))
    with (root / SOURCES_CSV).open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["path", "split", "speaker", "package", "recordings"])
        out.writerows([u.relpath, u.split, u.speaker, u.items[0].package, ";".join(i.rel for i in u.items)]
                      for u in utterances)
    for u in utterances:
        writer.submit(root / "wav" / u.relpath, config.sample_rate, lambda u=u: u.audio)
    return {"root": root, "utterances": len(utterances), "speakers": {ids[s.name]: s.name for s in by_id}}
