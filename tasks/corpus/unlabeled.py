"""Unlabelled clips for self-supervised pretraining: `unlabeled/speech_NNN.wav` and `unlabeled/scene_NNN.wav`.

Half are spoken sentences (random voice, pitch and speed), half are sound scenes mixing 1–3 synthetic events over a
noise floor; 2–6 s each at 16 kHz, the mix of speech and non-speech that AudioSet pretraining sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import sounds, synth, texts, voices
from .writer import ClipWriter, rng_for

DATASET_DIR = "unlabeled"
SAMPLE_RATE = 16000
SPEECH_CLIPS = 32
SCENE_CLIPS = 32
MIN_SECONDS, MAX_SECONDS = 2.0, 6.0


def render_speech(seed: int, index: int) -> np.ndarray:
    """One or two sentences by a fresh random voice, padded/cut to a random 2–6 s length."""
    rng = rng_for(seed, "unlabeled", "speech", index)
    voice = voices.draw_voices(rng, 1)[0]
    picks = rng.choice(len(texts.SENTENCES), size=int(rng.integers(1, 3)), replace=False)
    speech = synth.trim_silence(synth.speak(" ".join(texts.SENTENCES[i] for i in picks), voice, SAMPLE_RATE),
                                SAMPLE_RATE)
    seconds = float(np.clip(len(speech) / SAMPLE_RATE + rng.uniform(0.2, 1.0), MIN_SECONDS, MAX_SECONDS))
    n = int(seconds * SAMPLE_RATE)
    audio = np.zeros(n, np.float32)
    synth.add_at(audio, synth.fade(speech[:n], SAMPLE_RATE), int(rng.integers(0, max(1, n - len(speech)))))
    audio = sounds.with_background(audio, rng, snr_db=(15.0, 35.0))
    return synth.normalize_peak(audio, rng.uniform(0.3, 0.9))


def render_scene(seed: int, index: int) -> np.ndarray:
    """1–3 events drawn from all sound recipes, at random times and levels, over a coloured noise floor."""
    rng = rng_for(seed, "unlabeled", "scene", index)
    seconds = rng.uniform(MIN_SECONDS, MAX_SECONDS)
    n = int(seconds * SAMPLE_RATE)
    audio = np.zeros(n, np.float32)
    names = list(sounds.SCENE_RECIPES)
    for name in rng.choice(names, size=int(rng.integers(1, 4)), replace=False):
        length = rng.uniform(1.0, seconds)
        event = sounds.SCENE_RECIPES[str(name)](rng, rng, length, SAMPLE_RATE)
        event = event / (synth.rms(event) + 1e-9)
        synth.add_at(audio, event, int(rng.uniform(0.0, seconds - length) * SAMPLE_RATE), rng.uniform(0.3, 1.0))
    audio = sounds.with_background(audio, rng, snr_db=(10.0, 30.0))
    return synth.normalize_peak(synth.fade(audio, SAMPLE_RATE, 0.005), rng.uniform(0.3, 0.9))


def generate(out_dir: Path, seed: int, writer: ClipWriter) -> dict[str, Path]:
    """Queue all unlabelled clips; returns {"unlabeled": folder}."""
    root = out_dir / DATASET_DIR
    for i in range(SPEECH_CLIPS):
        writer.submit(root / f"speech_{i:03d}.wav", SAMPLE_RATE, lambda i=i: render_speech(seed, i))
    for i in range(SCENE_CLIPS):
        writer.submit(root / f"scene_{i:03d}.wav", SAMPLE_RATE, lambda i=i: render_scene(seed, i))
    return {"unlabeled": root}
