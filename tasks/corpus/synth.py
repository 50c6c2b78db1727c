"""Sound primitives of the embedded corpus: speech from espeak-ng, noise from sox, events built in numpy.

Every function is a pure function of its arguments (randomness comes in as a seeded `np.random.Generator`),
so a clip can be rendered on any thread, in any order, and still come out byte-identical.
Audio is float32 mono in [-1, 1]; `writer.write_wav` turns it into 16-bit PCM.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from upstream.errors import AsitError
from upstream.frontend import resample as frontend_resample

REQUIRED_TOOLS: tuple[str, ...] = ("espeak-ng", "sox")


def missing_tools() -> list[str]:
    """External programs the generator needs that are not on PATH."""
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def require_tools() -> None:
    """Fail early, in one line, when espeak-ng/sox are absent (rather than on the 100th subprocess call)."""
    missing = missing_tools()
    if missing:
        raise AsitError(f"{' and '.join(missing)} not found on PATH: the corpus generator needs them; "
                        "run scripts/setup.sh (it apt-installs espeak-ng and sox)")


# ----------------------------------------------------------------------------------------------- speech


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaking style: `name` is voice+variant (e.g. `en-us+m3`), pitch 0..99, speed in words/min."""

    name: str
    pitch: int
    speed: int

    def jittered(self, rng: np.random.Generator, pitch: int = 3, speed: int = 8) -> "Voice":
        """The same speaker on another day: small pitch/speed changes, identity kept."""
        return replace(self,
                       pitch=int(np.clip(self.pitch + rng.integers(-pitch, pitch + 1), 0, 99)),
                       speed=int(np.clip(self.speed + rng.integers(-speed, speed + 1), 80, 400)))


def speak(text: str, voice: Voice, sample_rate: int) -> np.ndarray:
    """Synthesise `text` with espeak-ng (writes a 22.05 kHz wav), resampled to `sample_rate`."""
    with tempfile.TemporaryDirectory(prefix="asit-espeak-") as tmp:
        wav_path = Path(tmp) / "speech.wav"
        cmd = ["espeak-ng", "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.speed), "-w", str(wav_path),
               "--", text]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wav_path.exists():
            raise RuntimeError(f"espeak-ng failed ({' '.join(cmd)}): {done.stderr.strip()}")
        audio, rate = sf.read(wav_path, dtype="float32", always_2d=True)
    if audio.shape[0] == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {text!r} with voice {voice.name}")
    return resample(audio.mean(axis=1), rate, sample_rate)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's sinc interpolation) through the frontend's own `resample`, whose
    kernel is built once per rate pair."""
    if orig_rate == new_rate:
        return audio.astype(np.float32, copy=False)
    return frontend_resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), orig_rate,
                             new_rate).numpy()


def trim_silence(audio: np.ndarray, sample_rate: int, floor_db: float = -40.0, margin_s: float = 0.02) -> np.ndarray:
    """Drop espeak-ng's leading/trailing silence so the spoken part can be placed at a chosen offset."""
    hop = max(1, int(0.01 * sample_rate))
    frames = len(audio) // hop
    if frames == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: frames * hop].reshape(frames, hop) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (floor_db / 20))
    margin = int(margin_s * sample_rate)
    start = max(0, loud[0] * hop - margin)
    stop = min(len(audio), (loud[-1] + 1) * hop + margin)
    return audio[start:stop]


# ------------------------------------------------------------------------------------------------- noise


SOX_NOISES: tuple[str, ...] = ("whitenoise", "pinknoise", "brownnoise")


def sox_noise(kind: str, seconds: float, sample_rate: int) -> np.ndarray:
    """Noise from `sox -R` (repeatable mode: the same call always yields the same samples)."""
    if kind not in SOX_NOISES:
        raise ValueError(f"unknown sox noise {kind!r}; choose from {SOX_NOISES}")
    cmd = ["sox", "-R", "-n", "-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-r", str(sample_rate),
           "-", "synth", f"{seconds:.6f}", kind]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"sox failed ({' '.join(cmd)}): {done.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(done.stdout, dtype="<i2").astype(np.float32) / 32768.0


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power ∝ 1/f^exponent (0 white, 1 pink, 2 brown), shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ events


def times(n: int, sample_rate: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sample_rate


def envelope(n: int, sample_rate: int, attack_s: float, decay_s: float) -> np.ndarray:
    """Linear attack, exponential decay (time constant `decay_s`): the shape of most struck/bursty sounds."""
    t = times(n, sample_rate)
    attack = np.clip(t / max(attack_s, 1e-4), 0.0, 1.0)
    return (attack * np.exp(-np.maximum(t - attack_s, 0.0) / max(decay_s, 1e-4))).astype(np.float32)


def tone(freq: float, seconds: float, sample_rate: int, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * times(int(seconds * sample_rate), sample_rate) + phase).astype(np.float32)


def chirp(f0: float, f1: float, seconds: float, sample_rate: int, harmonics: int = 2) -> np.ndarray:
    """Exponential sweep f0 → f1 with a few decaying harmonics (kept below Nyquist)."""
    t = times(int(seconds * sample_rate), sample_rate)
    ratio = f1 / f0
    phase = 2 * np.pi * f0 * seconds / np.log(ratio) * (ratio ** (t / seconds) - 1.0)
    out = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        if f1 * k < sample_rate / 2:
            out += np.sin(k * phase) / k
    return out.astype(np.float32)


def pluck(freq: float, seconds: float, sample_rate: int, decay_s: float, brightness: float = 0.6) -> np.ndarray:
    """A plucked string as a sum of harmonics whose decay is faster the higher they are."""
    t = times(int(seconds * sample_rate), sample_rate)[:, None]
    k = np.arange(1, 1 + max(1, min(24, int(sample_rate / 2 / freq) - 1)), dtype=np.float64)[None, :]
    amps = brightness ** (k - 1) / k
    partials = amps * np.exp(-t * (1.0 + 0.7 * (k - 1)) / decay_s) * np.sin(2 * np.pi * freq * k * t)
    attack = np.clip(t[:, 0] / 0.003, 0.0, 1.0)
    return (partials.sum(axis=1) * attack).astype(np.float32)


def hum(f0: float, seconds: float, sample_rate: int, rolloff: float, wobble: float = 0.0,
        wobble_rate: float = 0.3, phase: float = 0.0) -> np.ndarray:
    """Harmonic drone with slowly wandering pitch: engines, motors, mains hum."""
    t = times(int(seconds * sample_rate), sample_rate)
    inst_freq = f0 * (1.0 + wobble * np.sin(2 * np.pi * wobble_rate * t + phase))
    theta = 2 * np.pi * np.cumsum(inst_freq) / sample_rate
    out = np.zeros_like(t)
    for k in range(1, 13):
        if f0 * k * (1 + wobble) < sample_rate / 2:
            out += rolloff ** (k - 1) * np.sin(k * theta)
    return out.astype(np.float32)


def click(sample_rate: int, freq: float, decay_s: float) -> np.ndarray:
    """One click: a very short damped resonance."""
    n = int(min(0.03, 8 * decay_s) * sample_rate)
    t = times(n, sample_rate)
    return (np.exp(-t / decay_s) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- assembly


def add_at(dst: np.ndarray, src: np.ndarray, offset: int, gain: float = 1.0) -> None:
    """Mix `src` into `dst` starting at `offset`, cutting whatever overhangs the end."""
    if offset >= len(dst):
        return
    part = src[: len(dst) - offset]
    dst[offset: offset + len(part)] += gain * part


def fade(audio: np.ndarray, sample_rate: int, seconds: float = 0.01) -> np.ndarray:
    """Short raised-cosine fade in/out so cut edges do not click."""
    n = min(int(seconds * sample_rate), len(audio) // 2)
    if n == 0:
        return audio
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))).astype(np.float32)
    out = audio.astype(np.float32, copy=True)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)) + 1e-20))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + noise scaled so that RMS(signal)/RMS(noise) = snr_db (noise is cut/tiled to the signal length)."""
    if len(noise) < len(signal):
        noise = np.tile(noise, int(np.ceil(len(signal) / len(noise))))
    noise = noise[: len(signal)]
    return (signal + noise * (rms(signal) / rms(noise) / 10 ** (snr_db / 20))).astype(np.float32)


def normalize_peak(audio: np.ndarray, peak: float) -> np.ndarray:
    top = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return audio if top == 0.0 else (audio * (peak / top)).astype(np.float32)


def spectral_tilt(audio: np.ndarray, sample_rate: int, db_per_octave: float, pivot_hz: float = 1000.0) -> np.ndarray:
    """Tilt the spectrum around `pivot_hz`: a crude microphone/room colouring or a speaker's vocal brightness."""
    spectrum = np.fft.rfft(audio.astype(np.float64))
    freqs = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    octaves = np.log2(np.maximum(freqs, 50.0) / pivot_hz)
    return np.fft.irfft(spectrum * 10 ** (db_per_octave * octaves / 20), len(audio)).astype(np.float32)
