"""Non-speech sound categories ("recipes") shared by the ESC-50 classes and the unlabelled sound scenes.

A recipe takes two generators: `params` fixes the character of a sound source (pitch range, rate, colour) and
`detail` draws one recording of it (timing, exact notes, noise). Two ESC-50 takes of one source file share
`params` and differ in `detail`, like two excerpts of one freesound recording.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import synth

Recipe = Callable[[np.random.Generator, np.random.Generator, float, int], np.ndarray]


def _onsets(rng: np.random.Generator, count: int, seconds: float, length_s: float) -> list[float]:
    """`count` start times spread over the clip (one per equal slot) so events rarely pile up."""
    slot = seconds / count
    return [i * slot + float(rng.uniform(0.0, max(slot - 0.5 * length_s, 0.0))) for i in range(count)]


def pink_noise_burst(params: np.random.Generator, detail: np.random.Generator, seconds: float,
                     sample_rate: int) -> np.ndarray:
    """2–4 bursts of coloured (around pink) noise with a sharp attack and exponential decay."""
    exponent, burst_s = params.uniform(0.7, 1.3), params.uniform(0.15, 0.5)
    tilt = params.uniform(-3.0, 3.0)
    n = int(seconds * sample_rate)
    env = np.zeros(n, np.float32)
    count = int(detail.integers(2, 5))
    for onset in _onsets(detail, count, seconds, burst_s):
        length = burst_s * detail.uniform(0.8, 1.25)
        shape = synth.envelope(int(3 * length * sample_rate), sample_rate, 0.008, length / 2)
        synth.add_at(env, shape, int(onset * sample_rate), detail.uniform(0.6, 1.0))
    noise = synth.colored_noise(detail, n, exponent)
    return synth.spectral_tilt(noise * env, sample_rate, tilt)


def rising_chirp(params: np.random.Generator, detail: np.random.Generator, seconds: float,
                 sample_rate: int) -> np.ndarray:
    """2–4 exponential upward sweeps (several octaves in under a second), like a whistle or a bird call."""
    f0, ratio = params.uniform(250.0, 700.0), params.uniform(3.0, 6.0)
    sweep_s, harmonics = params.uniform(0.4, 1.0), int(params.integers(1, 4))
    out = np.zeros(int(seconds * sample_rate), np.float32)
    count = int(detail.integers(2, 5))
    for onset in _onsets(detail, count, seconds, sweep_s):
        start = f0 * detail.uniform(0.94, 1.06)
        length = sweep_s * detail.uniform(0.9, 1.1)
        sweep = synth.fade(synth.chirp(start, start * ratio, length, sample_rate, harmonics), sample_rate, 0.03)
        synth.add_at(out, sweep, int(onset * sample_rate), detail.uniform(0.6, 1.0))
    return out


PENTATONIC = np.array([0, 2, 4, 7, 9, 12, 14, 16])


def pluck_melody(params: np.random.Generator, detail: np.random.Generator, seconds: float,
                 sample_rate: int) -> np.ndarray:
    """A run of plucked-string notes on a pentatonic scale at a steady tempo."""
    base, note_s = params.uniform(180.0, 400.0), params.uniform(0.18, 0.35)
    decay_s, brightness = params.uniform(0.15, 0.4), params.uniform(0.4, 0.8)
    out = np.zeros(int(seconds * sample_rate), np.float32)
    notes: dict[int, np.ndarray] = {}   # one rendering per scale step: melodies repeat pitches
    t = detail.uniform(0.0, min(1.0, seconds / 4))
    end = seconds - detail.uniform(0.0, seconds / 4)
    while t < end:
        step = int(detail.choice(PENTATONIC))
        if step not in notes:
            notes[step] = synth.pluck(base * 2 ** (step / 12), min(4 * decay_s, 1.5), sample_rate, decay_s, brightness)
        synth.add_at(out, notes[step], int(t * sample_rate), detail.uniform(0.6, 1.0))
        t += note_s * detail.choice([1.0, 1.0, 2.0])
    return out


def engine_hum(params: np.random.Generator, detail: np.random.Generator, seconds: float,
               sample_rate: int) -> np.ndarray:
    """A low harmonic drone (30–65 Hz), amplitude-modulated like cylinder firing, over brown-noise rumble."""
    f0, rolloff = params.uniform(30.0, 65.0), params.uniform(0.6, 0.85)
    am_rate, wobble, rumble = params.uniform(2.0, 8.0), params.uniform(0.01, 0.04), params.uniform(0.2, 0.5)
    n = int(seconds * sample_rate)
    drone = synth.hum(f0 * detail.uniform(0.97, 1.03), seconds, sample_rate, rolloff, wobble,
                      detail.uniform(0.1, 0.5), detail.uniform(0.0, 2 * np.pi))[:n]
    t = synth.times(len(drone), sample_rate)
    am = 1.0 + detail.uniform(0.2, 0.4) * np.sin(2 * np.pi * am_rate * t + detail.uniform(0.0, 2 * np.pi))
    drone = drone * am.astype(np.float32) / (synth.rms(drone) + 1e-9)
    out = drone + rumble * synth.colored_noise(detail, len(drone), 2.0)
    return synth.fade(out.astype(np.float32), sample_rate, detail.uniform(0.05, 0.4))


def click_train(params: np.random.Generator, detail: np.random.Generator, seconds: float,
                sample_rate: int) -> np.ndarray:
    """1–3 trains of regular clicks (6–22 per second), each click a tiny high resonance: ticking, tapping."""
    rate = params.uniform(6.0, 22.0)
    freq = min(params.uniform(1500.0, 5000.0), 0.45 * sample_rate)
    one = synth.click(sample_rate, freq, params.uniform(0.0005, 0.002))
    out = np.zeros(int(seconds * sample_rate), np.float32)
    count = int(detail.integers(1, 4))
    for onset in _onsets(detail, count, seconds, 1.0):
        t, end = onset, onset + detail.uniform(0.6, 1.5)
        while t < min(end, seconds):
            synth.add_at(out, one, int(t * sample_rate), detail.uniform(0.5, 1.0))
            t += detail.uniform(0.9, 1.1) / rate
    return out


def tone_beeps(params: np.random.Generator, detail: np.random.Generator, seconds: float,
               sample_rate: int) -> np.ndarray:
    """Two alternating sine tones in short beeps: an alarm or a phone (used in unlabelled scenes only)."""
    low, step = params.uniform(400.0, 1500.0), params.uniform(1.1, 1.6)
    beep_s = params.uniform(0.08, 0.3)
    out = np.zeros(int(seconds * sample_rate), np.float32)
    t, high = detail.uniform(0.0, 0.5), False
    while t < seconds:
        beep = synth.fade(synth.tone(low * (step if high else 1.0), beep_s, sample_rate), sample_rate, 0.005)
        synth.add_at(out, beep, int(t * sample_rate))
        t, high = t + 2 * beep_s, not high
    return out


# ESC-50 classes in target order; the names say honestly what the synthetic sound is.
ESC_RECIPES: dict[str, Recipe] = {
    "pink_noise_burst": pink_noise_burst,
    "rising_chirp": rising_chirp,
    "pluck_melody": pluck_melody,
    "engine_hum": engine_hum,
    "click_train": click_train,
}
SCENE_RECIPES: dict[str, Recipe] = {**ESC_RECIPES, "tone_beeps": tone_beeps}


def with_background(event: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """Add a coloured noise floor (white…brown) at a random SNR: every real recording has one."""
    floor = synth.colored_noise(rng, len(event), rng.uniform(0.0, 2.0))
    return synth.mix_at_snr(event, floor, rng.uniform(*snr_db))
