"""VoxCeleb1 speaker identification layout: `VoxCeleb1/wav/idXXXXX/<video>/<utt>.wav` + `VoxCeleb1/iden_split.txt`.

8 speakers × 3 "videos" × 3 utterances of 2–4 s. A speaker is a fixed espeak-ng voice (accent+variant+pitch+speed)
plus a fixed vocal brightness; a video adds its own channel (noise colour and level, microphone tilt), so, as in the
real data, utterances of one video share a recording condition. Per speaker, 5 utterances are train (1),
2 validation (2) and 2 test (3), drawn across videos.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import synth, texts, voices
from .synth import Voice
from .writer import ClipWriter, rng_for

DATASET_DIR = "VoxCeleb1"
SAMPLE_RATE = 16000
SPEAKERS, VIDEOS_PER_SPEAKER, UTTERANCES_PER_VIDEO = 8, 3, 3
MIN_SECONDS, MAX_SECONDS = 2.0, 4.0
SPLIT_SIZES: dict[int, int] = {1: 5, 2: 2, 3: 2}   # utterances per speaker: 1 train, 2 validation, 3 test
FIRST_SPEAKER_ID = 10001                           # real ids run id10001 … id11251
VIDEO_ID_ALPHABET = string.ascii_letters + string.digits + "-_"   # YouTube ids: 11 chars of this alphabet


@dataclass(frozen=True)
class VoxSpeaker:
    id: str
    voice: Voice
    brightness_db: float   # spectral tilt per octave, part of the speaker's identity


@dataclass(frozen=True)
class VoxUtterance:
    speaker: VoxSpeaker
    video: str
    utterance: str
    split: int
    sentence: str

    @property
    def relpath(self) -> str:
        """The path as written in iden_split.txt (relative to `wav/`)."""
        return f"{self.speaker.id}/{self.video}/{self.utterance}"


def plan_utterances(seed: int) -> list[VoxUtterance]:
    """Every utterance with its split, sorted by path like the real iden_split.txt."""
    if sum(SPLIT_SIZES.values()) != VIDEOS_PER_SPEAKER * UTTERANCES_PER_VIDEO:
        raise ValueError("SPLIT_SIZES must cover every utterance of a speaker")
    rng = rng_for(seed, "voxceleb1", "plan")
    pool = voices.draw_voices(rng, SPEAKERS)
    videos_taken: set[str] = set()
    planned: list[VoxUtterance] = []
    for index, voice in enumerate(pool):
        speaker = VoxSpeaker(f"id{FIRST_SPEAKER_ID + index}", voice, float(rng.uniform(-3.0, 3.0)))
        splits = np.repeat(list(SPLIT_SIZES), list(SPLIT_SIZES.values()))[rng.permutation(sum(SPLIT_SIZES.values()))]
        sentences = rng.choice(len(texts.SENTENCES), size=len(splits), replace=False)
        slots = iter(zip(splits, sentences))
        for _ in range(VIDEOS_PER_SPEAKER):
            video = _draw_video_id(rng, videos_taken)
            for u in range(1, UTTERANCES_PER_VIDEO + 1):
                split, sentence = next(slots)
                planned.append(VoxUtterance(speaker, video, f"{u:05d}.wav", int(split), texts.SENTENCES[sentence]))
    return sorted(planned, key=lambda utt: utt.relpath)


def _draw_video_id(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        video = "".join(VIDEO_ID_ALPHABET[i] for i in rng.integers(0, len(VIDEO_ID_ALPHABET), 11))
        if video not in taken:
            taken.add(video)
            return video


def render_utterance(seed: int, utt: VoxUtterance) -> np.ndarray:
    """The sentence in the speaker's voice (slight day-to-day jitter), cut/padded to 2–4 s, through the video's
    channel."""
    rng = rng_for(seed, "voxceleb1", utt.relpath)
    channel = rng_for(seed, "voxceleb1", utt.speaker.id, utt.video, "channel")
    speech = synth.speak(utt.sentence, utt.speaker.voice.jittered(rng, pitch=2, speed=10), SAMPLE_RATE)
    speech = synth.spectral_tilt(synth.trim_silence(speech, SAMPLE_RATE), SAMPLE_RATE, utt.speaker.brightness_db)
    longest = int(rng.uniform(3.0, MAX_SECONDS) * SAMPLE_RATE)
    if len(speech) > longest:
        speech = synth.fade(speech[:longest], SAMPLE_RATE)
    audio = np.zeros(max(len(speech), int(MIN_SECONDS * SAMPLE_RATE)), np.float32)
    synth.add_at(audio, speech, int(rng.integers(0, len(audio) - len(speech) + 1)))
    floor = synth.colored_noise(channel, len(audio), channel.uniform(0.0, 2.0))
    audio = synth.mix_at_snr(audio, floor, channel.uniform(15.0, 30.0) + rng.uniform(-2.0, 2.0))
    audio = synth.spectral_tilt(audio, SAMPLE_RATE, channel.uniform(-2.0, 2.0))
    return synth.normalize_peak(audio, rng.uniform(0.3, 0.9))


def generate(out_dir: Path, seed: int, writer: ClipWriter) -> dict[str, Path]:
    """Write iden_split.txt now and queue the utterances; returns {"voxceleb1": root}."""
    root = out_dir / DATASET_DIR
    planned = plan_utterances(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "iden_split.txt").write_text("".join(f"{utt.split} {utt.relpath}\n" for utt in planned))
    for utt in planned:
        writer.submit(root / "wav" / utt.relpath, SAMPLE_RATE, lambda utt=utt: render_utterance(seed, utt))
    return {"voxceleb1": root}
