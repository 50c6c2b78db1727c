"""Speech Commands layouts: v0.02 (35-word convention), v0.01 (SUPERB KS) and SUPERB's separate v0.01 test set.

`<word>/<speaker>_nohash_<n>.wav` (1 s, 16 kHz), `validation_list.txt`, `testing_list.txt`, `_background_noise_/`.
Each synthetic speaker is one espeak-ng voice (accent+variant, pitch, speed); takes jitter pitch/speed slightly and
place the word at a random offset over a little background noise.

Splits. The real lists come from a hash of the speaker id (`which_set`: SHA-1 of the part before `_nohash_`,
<10 % validation, <20 % testing), and some tools (s3prl) recompute that hash instead of reading the lists. Speaker
ids here are drawn until their hash lands in the wanted split, so the lists and the hash rule agree, while the
proportions (6/2/2 speakers ≈ 60/20/20) are chosen for a tiny corpus rather than 80/10/10.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import synth, texts, voices
from .synth import Voice
from .writer import ClipWriter, rng_for

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
V2_DIR = "speech_commands_v0.02"
V1_DIR = "speech_commands_v0.01"
V1_TEST_DIR = "speech_commands_test_set_v0.01"
BACKGROUND_DIR = "_background_noise_"
SILENCE_DIR, UNKNOWN_DIR = "_silence_", "_unknown_"

V2_WORDS: tuple[str, ...] = texts.COMMAND_WORDS + ("zero", "one", "bed", "bird")
V1_WORDS: tuple[str, ...] = texts.COMMAND_WORDS + ("three", "cat", "happy", "wow")
SPLITS: dict[str, int] = {"training": 6, "validation": 2, "testing": 2}   # speakers per split
TEST_SET_SPEAKERS = 3
TEST_SET_SILENCE_CLIPS = 6
BACKGROUND_SECONDS = 10
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1   # constant of the real split rule


def which_set(filename: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0) -> str:
    """The real datasets' split rule: 'training' | 'validation' | 'testing' from the speaker part of a file name."""
    speaker = re.sub(r"_nohash_.*$", "", Path(filename).name)
    hashed = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percentage = (hashed % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def draw_speaker_id(rng: np.random.Generator, split: str | None, taken: set[str]) -> str:
    """A fresh 8-hex-digit id (like `0a7c2a8d`) whose hash rule gives `split` (any split when None)."""
    while True:
        speaker = f"{int(rng.integers(0, 2 ** 32)):08x}"
        if speaker not in taken and (split is None or which_set(speaker) == split):
            taken.add(speaker)
            return speaker


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: Voice
    split: str


def draw_speakers(rng: np.random.Generator, splits: dict[str, int], exclude_voices: frozenset[str] = frozenset(),
                  taken: set[str] | None = None) -> list[Speaker]:
    """Speakers with distinct voices, `splits[name]` of them per split."""
    taken = set() if taken is None else taken
    total = sum(splits.values())
    pool = voices.draw_voices(rng, total, exclude_voices)
    names = [split for split, count in splits.items() for _ in range(count)]
    return [Speaker(draw_speaker_id(rng, split if split in SPLITS else None, taken), voice, split)
            for split, voice in zip(names, pool)]


# ------------------------------------------------------------------------------------------------ audio


def background_noises(seed: int) -> dict[str, np.ndarray]:
    """~10 s noise files like the real `_background_noise_` (which has white/pink noise and recorded ones)."""
    n = BACKGROUND_SECONDS * SAMPLE_RATE
    out: dict[str, np.ndarray] = {}
    for name, kind in (("white_noise", "whitenoise"), ("pink_noise", "pinknoise"), ("brown_noise", "brownnoise")):
        out[name] = synth.sox_noise(kind, BACKGROUND_SECONDS, SAMPLE_RATE)[:n]
    rng = rng_for(seed, "speechcommands", "mains_hum")
    hum = synth.hum(float(rng.choice([50.0, 60.0])), BACKGROUND_SECONDS, SAMPLE_RATE, rolloff=0.5)
    out["mains_hum"] = synth.mix_at_snr(hum, synth.colored_noise(rng, n, 1.0), 20.0)
    for name in out:
        level = rng_for(seed, "speechcommands", "background", name).uniform(0.2, 0.6)
        out[name] = synth.normalize_peak(out[name], level)
    return out


def noise_snippet(rng: np.random.Generator, backgrounds: dict[str, np.ndarray]) -> np.ndarray:
    """A random 1 s cut from a random background file."""
    noise = backgrounds[sorted(backgrounds)[int(rng.integers(len(backgrounds)))]]
    start = int(rng.integers(0, len(noise) - CLIP_SAMPLES + 1))
    return noise[start: start + CLIP_SAMPLES]


def render_word(seed: int, key: tuple[str, ...], word: str, voice: Voice,
                backgrounds: dict[str, np.ndarray]) -> np.ndarray:
    """One 1 s take: jittered voice, word at a random offset, background noise at 15–35 dB SNR."""
    rng = rng_for(seed, *key)
    speech = synth.trim_silence(synth.speak(word, voice.jittered(rng), SAMPLE_RATE), SAMPLE_RATE)
    if len(speech) > CLIP_SAMPLES:
        speech = synth.fade(speech[:CLIP_SAMPLES], SAMPLE_RATE)
    clip = np.zeros(CLIP_SAMPLES, np.float32)
    synth.add_at(clip, speech, int(rng.integers(0, CLIP_SAMPLES - len(speech) + 1)))
    clip = synth.mix_at_snr(clip, noise_snippet(rng, backgrounds), rng.uniform(15.0, 35.0))
    return synth.normalize_peak(clip, rng.uniform(0.2, 0.9))


def render_silence(seed: int, key: tuple[str, ...], backgrounds: dict[str, np.ndarray]) -> np.ndarray:
    """SUPERB-style `_silence_` test clip: background noise at a low level."""
    rng = rng_for(seed, *key)
    return synth.normalize_peak(noise_snippet(rng, backgrounds), rng.uniform(0.01, 0.08))


# ---------------------------------------------------------------------------------------------- layouts


def _write_list(path: Path, entries: list[str]) -> None:
    path.write_text("".join(f"{entry}\n" for entry in sorted(entries)))


def _write_backgrounds(root: Path, backgrounds: dict[str, np.ndarray], writer: ClipWriter) -> None:
    for name, audio in backgrounds.items():
        writer.submit(root / BACKGROUND_DIR / f"{name}.wav", SAMPLE_RATE, lambda audio=audio: audio,
                      length=BACKGROUND_SECONDS * SAMPLE_RATE)


def _write_version(root: Path, seed: int, tag: str, words: tuple[str, ...], speakers: list[Speaker],
                   backgrounds: dict[str, np.ndarray], writer: ClipWriter) -> None:
    """Word folders (1–2 takes per speaker and word), the two list files and `_background_noise_/`."""
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    for speaker in speakers:
        for word in words:
            takes = 1 + int(rng_for(seed, tag, "takes", speaker.id, word).random() < 0.5)
            for n in range(takes):
                relpath = f"{word}/{speaker.id}_nohash_{n}.wav"
                if speaker.split in lists:
                    lists[speaker.split].append(relpath)
                writer.submit(root / relpath, SAMPLE_RATE,
                              lambda k=(tag, relpath), w=word, v=speaker.voice: render_word(seed, k, w, v, backgrounds),
                              length=CLIP_SAMPLES)
    root.mkdir(parents=True, exist_ok=True)
    _write_list(root / "validation_list.txt", lists["validation"])
    _write_list(root / "testing_list.txt", lists["testing"])
    _write_backgrounds(root, backgrounds, writer)


def generate_v2(out_dir: Path, seed: int, writer: ClipWriter) -> dict[str, Path]:
    """Speech Commands v0.02 convention; returns {"speechcommands_v2": root}."""
    root = out_dir / V2_DIR
    speakers = draw_speakers(rng_for(seed, "sc_v2", "speakers"), SPLITS)
    _write_version(root, seed, "sc_v2", V2_WORDS, speakers, background_noises(seed), writer)
    return {"speechcommands_v2": root}


def generate_v1(out_dir: Path, seed: int, writer: ClipWriter) -> dict[str, Path]:
    """Speech Commands v0.01 + SUPERB's official test set (10 words, `_silence_`, `_unknown_`), whose speakers and
    voices appear nowhere in v0.01. Returns {"speechcommands_v1": root, "speechcommands_v1_test": test root}."""
    root, test_root = out_dir / V1_DIR, out_dir / V1_TEST_DIR
    rng = rng_for(seed, "sc_v1", "speakers")
    taken: set[str] = set()
    speakers = draw_speakers(rng, SPLITS, taken=taken)
    backgrounds = background_noises(seed)
    _write_version(root, seed, "sc_v1", V1_WORDS, speakers, backgrounds, writer)

    used_voices = frozenset(s.voice.name for s in speakers)
    test_speakers = draw_speakers(rng, {"test_set": TEST_SET_SPEAKERS}, used_voices, taken)
    for speaker in test_speakers:
        for word in V1_WORDS:
            folder, name = ((word, f"{speaker.id}_nohash_0.wav") if word in texts.COMMAND_WORDS
                            else (UNKNOWN_DIR, f"{word}_{speaker.id}_nohash_0.wav"))
            writer.submit(test_root / folder / name, SAMPLE_RATE,
                          lambda k=("sc_v1_test", folder, name), w=word, v=speaker.voice:
                          render_word(seed, k, w, v, backgrounds), length=CLIP_SAMPLES)
    for k in range(TEST_SET_SILENCE_CLIPS):
        name = f"silence_{k:04d}.wav"
        writer.submit(test_root / SILENCE_DIR / name, SAMPLE_RATE,
                      lambda key=("sc_v1_test", SILENCE_DIR, name): render_silence(seed, key, backgrounds),
                      length=CLIP_SAMPLES)
    return {"speechcommands_v1": root, "speechcommands_v1_test": test_root}
