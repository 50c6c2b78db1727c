"""Data-path benchmark: file -> decode (soundfile) -> mono -> resample to the frontend's rate -> normalised Kaldi
fbank, in clips per second on one core (one process, `torch.set_num_threads(1)`: what one DataLoader worker gets).

Every pass runs twice, interleaved: with the frontend's `resample` (its sinc kernel cached per rate pair) and with
`torchaudio.functional.resample` (the kernel rebuilt for every clip, the previous behaviour), so the two see the same
load. The clips are written by the benchmark itself into a temporary folder (synthetic but not trivial: harmonic
tones with vibrato, a chirp up to near the Nyquist frequency, noise bursts), as 16-bit WAV and FLAC at 44.1 kHz (the
ESC-50 layout: resampled) and 16 kHz (passed through). After the warm-up pass the files sit in the OS page cache, so
`decode` is decoding, not disk reads. Results are JSON (no timed assertions in tests).

    asit perf --benches data --seconds 5 --out benchmarks/results/data-path-cpu.json
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
import torchaudio

from upstream.errors import AsitError
from upstream.frontend import Frontend, FrontendConfig, load_audio, resample, to_mono

from .perf import environment, write_report

# (container, sample rate) of the clips: ESC-50's 44.1 kHz (resampled to 16 kHz) and 16 kHz (a passthrough)
KINDS: tuple[tuple[str, int], ...] = (("wav", 44100), ("flac", 44100), ("wav", 16000), ("flac", 16000))
STAGES = ("decode", "resample", "fbank")
RESAMPLERS: dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]] = {
    "cached": resample,                                   # the frontend's: torchaudio's Resample, one per rate pair
    "functional": torchaudio.functional.resample,         # builds the sinc kernel on every call
}


def synthetic_clip(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A mono float32 clip with energy across the band (so the resampler's filter and the fbank see real content):
    a harmonic tone with vibrato, a linear chirp up to 0.45 x the rate, and enveloped noise bursts; peak 0.8."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    f0 = rng.uniform(110.0, 440.0)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5.0 * t))) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 9))
    top = 0.45 * rate
    chirp = 0.3 * np.sin(2 * np.pi * (50.0 * t + (top - 50.0) * t ** 2 / (2 * max(seconds, 1e-3))))
    bursts = rng.standard_normal(t.size) * (np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t) > 0.6)
    clip = tone + chirp + 0.5 * bursts
    return (0.8 * clip / max(float(np.abs(clip).max()), 1e-9)).astype(np.float32)


def write_clips(folder: Path, kinds: Sequence[tuple[str, int]], clips: int, seconds: float,
                seed: int = 0) -> dict[tuple[str, int], list[Path]]:
    """`clips` distinct 16-bit files of each (container, rate) kind under `folder`."""
    files: dict[tuple[str, int], list[Path]] = {}
    for fmt, rate in kinds:
        paths = []
        for index in range(clips):
            path = folder / f"{rate}-{index}.{fmt}"
            soundfile.write(str(path), synthetic_clip(seconds, rate, seed + index), rate, subtype="PCM_16",
                            format=fmt.upper())
            paths.append(path)
        files[(fmt, rate)] = paths
    return files


def time_pass(paths: Sequence[Path], frontend: Frontend,
              resampler: Callable[[torch.Tensor, int, int], torch.Tensor]) -> dict[str, float]:
    """Seconds each stage took over one pass through the files, the clips processed one at a time."""
    spent = dict.fromkeys(STAGES, 0.0)
    rate = frontend.config.sample_rate
    for path in paths:
        start = time.perf_counter()
        wave, sr = load_audio(path)
        wave = to_mono(wave)
        decoded = time.perf_counter()
        wave = resampler(wave, sr, rate)
        resampled = time.perf_counter()
        frontend(wave)
        done = time.perf_counter()
        spent["decode"] += decoded - start
        spent["resample"] += resampled - decoded
        spent["fbank"] += done - resampled
    return spent


def data_path(files: dict[tuple[str, int], list[Path]], frontend: Frontend, repeats: int,
              seconds: float) -> list[dict[str, Any]]:
    """One row per (kind, resampler): `clips` (files x repeats) over `seconds` (the stages' sum, every timed pass),
    clips/s, seconds of audio per second, each stage's seconds and share. One untimed warm-up pass each first (where
    the cached resampler builds its kernel, if this process has not yet); then passes alternate resamplers, their order
    swapped every repeat, so a load change on a shared machine hits both."""
    totals = {(kind, name): dict.fromkeys(STAGES, 0.0) for kind in files for name in RESAMPLERS}
    passes: dict[tuple[tuple[str, int], str], list[float]] = {key: [] for key in totals}
    for paths in files.values():
        for fn in RESAMPLERS.values():
            time_pass(paths, frontend, fn)
    for repeat in range(repeats):
        order = list(RESAMPLERS) if repeat % 2 == 0 else list(reversed(RESAMPLERS))
        for kind, paths in files.items():
            for name in order:
                spent = time_pass(paths, frontend, RESAMPLERS[name])
                for stage, value in spent.items():
                    totals[(kind, name)][stage] += value
                passes[(kind, name)].append(sum(spent.values()))
    rows = []
    for (kind, name), stage_s in totals.items():
        fmt, rate = kind
        paths = files[kind]
        clips = len(paths) * repeats
        total = sum(stage_s.values())
        rows.append({
            "bench": "data_path", "format": fmt, "sample_rate": rate, "target_rate": frontend.config.sample_rate,
            "subtype": "PCM_16", "channels": 1, "clip_seconds": seconds, "resampler": name,
            "bytes_per_clip": int(np.mean([p.stat().st_size for p in paths])),
            "clips": clips, "seconds": total, "clips_per_s": clips / total,
            "audio_seconds_per_s": clips * seconds / total,
            "stage_s": stage_s, "shares": {stage: value / total for stage, value in stage_s.items()},
            "pass_s": passes[(kind, name)],
        })
    by_key = {(r["format"], r["sample_rate"], r["resampler"]): r for r in rows}
    for row in rows:
        if row["resampler"] == "cached":
            other = by_key[(row["format"], row["sample_rate"], "functional")]
            resampled = row["sample_rate"] != row["target_rate"]    # else both pass the input through
            row["vs_functional"] = {
                "clips_per_s_ratio": row["clips_per_s"] / other["clips_per_s"],
                "resample_s_ratio": other["stage_s"]["resample"] / row["stage_s"]["resample"] if resampled else None}
    return rows


def run_data_path(out: Path, *, seconds: float = 5.0, clips: int = 16, repeats: int = 5,
                  kinds: Sequence[tuple[str, int]] = KINDS, config: FrontendConfig | None = None) -> dict[str, Any]:
    """Write the clips into a temporary folder (removed afterwards), time the data path on one thread and write the
    JSON report to `out`; the caller's torch thread count is restored afterwards."""
    if seconds <= 0 or clips < 1 or repeats < 1:
        raise AsitError(f"data-path benchmark: seconds, clips and repeats must be positive "
                        f"(got {seconds}, {clips}, {repeats})")
    frontend = Frontend(config or FrontendConfig())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        env = environment(torch.device("cpu"))
        env.update({"torchaudio": torchaudio.__version__, "soundfile": soundfile.__version__,
                    "libsndfile": soundfile.__libsndfile_version__, "processes": 1})
        with tempfile.TemporaryDirectory(prefix="asit-data-path-") as tmp:
            files = write_clips(Path(tmp), kinds, clips, seconds)
            rows = data_path(files, frontend, repeats, seconds)
    finally:
        torch.set_num_threads(threads)
    for row in rows:
        print(f"data_path {row['format']:>4} {row['sample_rate']:>5} Hz {row['resampler']:>10}: "
              f"{row['clips_per_s']:8.1f} clips/s  shares " +
              " ".join(f"{stage} {share:.0%}" for stage, share in row["shares"].items()), flush=True)
    return write_report(out, env, rows)


__all__ = ["KINDS", "RESAMPLERS", "STAGES", "data_path", "run_data_path", "synthetic_clip", "time_pass",
           "write_clips"]
