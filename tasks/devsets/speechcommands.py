"""Speech Commands v0.02 layout from TTS voices over recorded ambience: `speech_commands_v0.02/<word>/
<speaker>_nohash_<n>.wav` (1 s, 16 kHz), `validation_list.txt`, `testing_list.txt`, `_background_noise_/`.

Speakers are the catalog's voices: each flite/festival voice (recordings of a real person behind it) is one
speaker, and `espeak-ng: count` adds that many espeak-ng speakers (distinct accent+variant, own pitch and speed,
from the corpus's voice pool). Every speaker says every word 1-2 times; a take jitters speed (and pitch for
espeak-ng), is trimmed of silence, placed at a random offset in 1 s and mixed with a random second of a
background at a random SNR.

Splits are by speaker, as in the real data: the speaker list (grouped by engine, in catalog order) is dealt to
training/validation/testing evenly along the list, so every engine family is represented in every split where its
size allows; speaker ids are drawn until the real hash rule (`which_set`) agrees with the assigned split, so the
list files and the rule that s3prl recomputes say the same thing.

`_background_noise_/` holds the recorded ambiences (16 kHz, at most `background_max_seconds`) and sox's white/pink
noise, plus a README naming the sources.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.corpus import synth, voices
from tasks.corpus.speechcommands import draw_speaker_id
from tasks.corpus.writer import ClipWriter, rng_for
from upstream.errors import AsitError

from . import sources as src
from .catalog import SC_SPLITS, ScConfig
from .sources import Package
from .tts import ENGINES, Style

DATASET_DIR = "speech_commands_v0.02"
BACKGROUND_DIR = "_background_noise_"
SOURCES_CSV = "devsets_sources.csv"
CLIP_SECONDS = 1.0
SOX_NOISE = {"white_noise": "whitenoise", "pink_noise": "pinknoise", "brown_noise": "brownnoise"}


@dataclass(frozen=True)
class ScSpeaker:
    id: str
    engine: str
    voice: str
    split: str
    pitch: int = 50         # espeak-ng only
    wpm: int = 160          # espeak-ng only
    speed: float = 1.0      # the speaker's own tempo (flite/festival duration factor)


def plan_speakers(seed: int, config: ScConfig) -> list[ScSpeaker]:
    """Every speaker with its split, in catalog order (espeak-ng speakers drawn from the corpus pool)."""
    rng = rng_for(seed, "devsets-sc", "speakers")
    drafts: list[tuple[str, str, int, int, float]] = []
    for spec in config.voices:
        if spec.engine == "espeak-ng" and spec.voice is None:
            drafts += [("espeak-ng", v.name, v.pitch, v.speed, 1.0) for v in voices.draw_voices(rng, spec.count)]
        elif spec.engine == "espeak-ng":
            drafts.append(("espeak-ng", str(spec.voice), int(rng.integers(*voices.PITCH_RANGE)),
                           int(rng.integers(*voices.SPEED_RANGE)), 1.0))
        else:
            drafts.append((spec.engine, str(spec.voice), 50, 160, float(rng.uniform(0.92, 1.08))))
    splits = deal_splits(len(drafts), config.split_fractions)
    taken: set[str] = set()
    return [ScSpeaker(draw_speaker_id(rng, split, taken), engine, voice, split, pitch, wpm, speed)
            for (engine, voice, pitch, wpm, speed), split in zip(drafts, splits)]


def deal_splits(count: int, fractions: dict[str, float]) -> list[str]:
    """`count` split names in the given proportions (each split at least one speaker), spread evenly along the list:
    the k-th speaker of a split sits near position (k + 0.5) / n_split of the list."""
    total = sum(fractions.values())
    sizes = {name: max(1, int(round(count * fractions[name] / total))) for name in SC_SPLITS if name != "training"}
    sizes["training"] = count - sum(sizes.values())
    if sizes["training"] < 1:
        raise ValueError(f"{count} speakers cannot fill training, validation and testing")
    slots = sorted(((k + 0.5) / size, name) for name, size in sizes.items() for k in range(size))
    return [name for _, name in slots]


def load_backgrounds(seed: int, config: ScConfig, packages: dict[str, Package]) -> dict[str, np.ndarray]:
    """Recorded ambiences (mono, 16 kHz, at most `background_max_seconds`) and sox noises, each at its own level."""
    rate, longest = config.sample_rate, int(config.background_max_seconds * config.sample_rate)
    out: dict[str, np.ndarray] = {}
    for bg in config.backgrounds:
        path = packages[bg.package].root / bg.file
        if not path.is_file():
            raise AsitError(f"background {bg.name}: {bg.file} is not in package {bg.package} "
                                f"({packages[bg.package].root})")
        out[bg.name] = np.array(src.load(path, rate)[:longest], dtype=np.float32)
    seconds = min(config.background_max_seconds, 60.0)
    for name in config.synthetic_noise:
        out[name] = synth.sox_noise(SOX_NOISE[name], seconds, rate)[: int(seconds * rate)]
    for name in out:
        if len(out[name]) < rate:
            raise AsitError(f"background {name} is shorter than 1 s")
        out[name] = synth.normalize_peak(out[name], rng_for(seed, "devsets-sc", "background", name).uniform(0.2, 0.6))
    return out


def render_word(seed: int, config: ScConfig, speaker: ScSpeaker, word: str, take: int,
                backgrounds: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """One 1 s take and the name of the background under it."""
    rate, n = config.sample_rate, int(CLIP_SECONDS * config.sample_rate)
    rng = rng_for(seed, "devsets-sc", speaker.id, word, take)
    style = Style(speed=speaker.speed * float(rng.uniform(0.92, 1.1)),
                  pitch=int(np.clip(speaker.pitch + rng.integers(-3, 4), 0, 99)),
                  wpm=int(np.clip(speaker.wpm + rng.integers(-8, 9), 80, 400)))
    speech = synth.trim_silence(ENGINES[speaker.engine](word, speaker.voice, style, rate), rate)
    if len(speech) > n:
        speech = synth.fade(speech[:n], rate)
    clip = np.zeros(n, np.float32)
    synth.add_at(clip, synth.fade(speech, rate, 0.005), int(rng.integers(0, n - len(speech) + 1)))
    name = sorted(backgrounds)[int(rng.integers(len(backgrounds)))]
    noise = backgrounds[name]
    start = int(rng.integers(0, len(noise) - n + 1))
    clip = synth.mix_at_snr(clip, noise[start:start + n], rng.uniform(*config.snr_db))
    return synth.normalize_peak(clip, rng.uniform(*config.peak)), name


def generate(out_dir: Path, seed: int, config: ScConfig, packages: dict[str, Package],
             writer: ClipWriter) -> dict[str, object]:
    """Write the lists and the background folder, queue every take; returns a summary for the manifest."""
    root = out_dir / DATASET_DIR
    speakers = plan_speakers(seed, config)
    backgrounds = load_backgrounds(seed, config, packages)
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    rows: list[list[str]] = []
    used: dict[str, str] = {}

    def render(speaker: ScSpeaker, word: str, take: int, relpath: str) -> np.ndarray:
        audio, used[relpath] = render_word(seed, config, speaker, word, take, backgrounds)
        return audio

    for speaker in speakers:
        for word in config.words:
            takes = int(rng_for(seed, "devsets-sc", "takes", speaker.id, word).integers(config.takes[0],
                                                                                           config.takes[1] + 1))
            for take in range(takes):
                relpath = f"{word}/{speaker.id}_nohash_{take}.wav"
                if speaker.split in lists:
                    lists[speaker.split].append(relpath)
                rows.append([relpath, speaker.split, speaker.id, speaker.engine, speaker.voice])
                writer.submit(root / relpath, config.sample_rate,
                              lambda s=speaker, w=word, t=take, r=relpath: render(s, w, t, r),
                              length=int(CLIP_SECONDS * config.sample_rate))
    root.mkdir(parents=True, exist_ok=True)
    (root / "validation_list.txt").write_text("".join(f"{e}\n" for e in sorted(lists["validation"])))
    (root / "testing_list.txt").write_text("".join(f"{e}\n" for e in sorted(lists["testing"])))
    for name, audio in backgrounds.items():
        writer.submit(root / BACKGROUND_DIR / f"{name}.wav", config.sample_rate, lambda audio=audio: audio)
    readme = ["Background recordings of the asit-hear dev set (see docs/devsets.md):", ""]
    readme += [f"- {bg.name}.wav: {bg.file} from the Debian package {bg.package}" for bg in config.backgrounds]
    readme += [f"- {name}.wav: `sox -R -n ... synth {SOX_NOISE[name]}`" for name in config.synthetic_noise]
    (root / BACKGROUND_DIR).mkdir(parents=True, exist_ok=True)
    (root / BACKGROUND_DIR / "README.md").write_text("\n".join(readme) + "\n")

    def write_sources() -> None:
        with (root / SOURCES_CSV).open("w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(["path", "split", "speaker", "engine", "voice", "background"])
            out.writerows(sorted(row + [used[row[0]]] for row in rows))

    return {"root": root, "finish": write_sources, "clips": len(rows), "words": list(config.words),
            "speakers": {s: sum(1 for sp in speakers if sp.split == s) for s in SC_SPLITS},
            "voices": sorted({f"{s.engine}:{s.voice}" for s in speakers})}
