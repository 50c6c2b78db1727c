"""Text-to-speech engines behind one signature, so a speaker is data: `(engine, voice, style)`.

`ENGINES[name](text, voice, style, sample_rate) -> float32 mono audio`. `style` carries per-take variation
(`speed`: a duration factor, `pitch`/`wpm` for espeak-ng). All three write a temporary wav (espeak-ng with the
corpus's `synth.speak` command line), resampled with a cached kernel.
"""

from __future__ import annotations

import glob
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from upstream.errors import AsitError

from .sources import read_audio, resample

FESTIVAL_VOICE_DIRS = "/usr/share/festival/voices/*/{voice}"
ENGINE_TOOLS: dict[str, tuple[str, ...]] = {"espeak-ng": ("espeak-ng",), "flite": ("flite",),
                                            "festival": ("text2wave",)}


@dataclass(frozen=True)
class Style:
    """How one take is spoken: `speed` > 1 is slower (a duration factor); espeak-ng takes pitch 0-99 and wpm."""

    speed: float = 1.0
    pitch: int = 50
    wpm: int = 160


Engine = Callable[[str, str, Style, int], np.ndarray]


def _espeak(text: str, voice: str, style: Style, sample_rate: int) -> np.ndarray:
    """The corpus's `synth.speak` command line, resampled with a cached kernel."""
    return _via_wav(["espeak-ng", "-v", voice, "-p", str(style.pitch), "-s", str(style.wpm), "-w", OUT, "--", text],
                    sample_rate)


def _flite(text: str, voice: str, style: Style, sample_rate: int) -> np.ndarray:
    return _via_wav(["flite", "-voice", voice, "--setf", f"duration_stretch={style.speed:.3f}", "-t", text, "-o",
                     OUT], sample_rate)


def _festival(text: str, voice: str, style: Style, sample_rate: int) -> np.ndarray:
    return _via_wav(["text2wave", "-eval", f"(voice_{voice})", "-eval",
                     f"(Parameter.set 'Duration_Stretch {style.speed:.3f})", "-o", OUT], sample_rate, stdin=text)


OUT = "{out}"   # stands for the temporary wav in a command line


def _via_wav(cmd: list[str], sample_rate: int, stdin: str | None = None) -> np.ndarray:
    """Run `cmd` (its `{out}` argument replaced by a temporary wav; the text as an argument or on stdin) and read
    what it wrote."""
    with tempfile.TemporaryDirectory(prefix="asit-tts-") as tmp:
        out = Path(tmp) / "speech.wav"
        cmd = [str(out) if arg == OUT else arg for arg in cmd]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
            raise RuntimeError(f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        audio, rate = read_audio(out)
    return resample(audio, rate, sample_rate)


ENGINES: dict[str, Engine] = {"espeak-ng": _espeak, "flite": _flite, "festival": _festival}


def check_voice(engine: str, voice: str, package: str | None = None) -> None:
    """Fail early, in one line, when a flite/festival voice is not installed."""
    if engine == "festival" and not glob.glob(FESTIVAL_VOICE_DIRS.format(voice=voice)):
        raise AsitError(f"festival voice {voice} is not installed: run scripts/setup_devsets.sh (or `sudo apt-get "
                        f"install {package or 'festvox-<voice>'}`)")
    if engine == "flite":
        done = subprocess.run(["flite", "-lv"], capture_output=True, text=True)
        if voice not in done.stdout.split():
            raise AsitError(f"flite has no voice {voice!r} (it has: {done.stdout.strip()})")
