"""Performance benchmarks: encoder inference throughput, its scaling with duration, and the pretraining step
throughput, for each benchmark model (an encoder + its frontend + its pretraining objective, `MODELS`) and
precision. Results are JSON (never timed assertions in tests).

    asit perf --models vit-small vit-base conformer-small conformer-large --precisions fp32 bf16 --device cuda \
        --out benchmarks/results/perf-h100.json
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upstream.atomic import atomic_write_text
from upstream.encoders import build_encoder, encoder_config_from_dict
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig
from upstream.host_memory import freed_memory_kept
from upstream.objectives import build_objective
from upstream.runtime import EncoderRuntime, RuntimeOptions
from upstream.schedules import TrainingProgress

from .step_parts import StepClock, step_breakdown
from .step_parts import sync as _sync

# The paper's 128-bin, 25 ms / 10 ms fbank (ASiT) and the conformer paper's 64-bin, 64 ms / 20 ms one. The
# conformer's statistics are estimated from data in real runs; any values time the same.
VIT_FRONTEND = FrontendConfig()
CONFORMER_FRONTEND = FrontendConfig(num_mel_bins=64, frame_length_ms=64, frame_shift_ms=20, stats="estimate",
                                    mean=-6.0, std=4.0)


@dataclass(frozen=True)
class BenchModel:
    """What a benchmark model name stands for: the encoder (a `build_encoder` mapping), its frontend, the
    pretraining objective timed by `pretrain_step` (a `build_objective` spec, at that objective's paper-size
    defaults) with its crop length (frames of this frontend) and views per clip."""

    encoder: Mapping[str, Any]
    frontend: FrontendConfig
    objective: Mapping[str, Any]
    crop_frames: int
    views: int = 1

    def crop_seconds(self, frames: int) -> float:
        """Seconds of audio a crop of `frames` frames stands for (frames x hop)."""
        return frames * self.frontend.frame_shift_ms / 1000.0


MODELS: dict[str, BenchModel] = {
    "vit-tiny": BenchModel({"arch": "vit", "size": "tiny"}, VIT_FRONTEND, {"name": "asit"}, 592, views=2),
    "vit-small": BenchModel({"arch": "vit", "size": "small"}, VIT_FRONTEND, {"name": "asit"}, 592, views=2),
    "vit-base": BenchModel({"arch": "vit", "size": "base"}, VIT_FRONTEND, {"name": "asit"}, 592, views=2),
    "conformer-small": BenchModel({"arch": "conformer", "size": "small"}, CONFORMER_FRONTEND,
                                  {"name": "wav2vec2_conformer"}, 500, views=1),
    "conformer-large": BenchModel({"arch": "conformer", "size": "large"}, CONFORMER_FRONTEND,
                                  {"name": "wav2vec2_conformer"}, 500, views=1),
}
SIZE_ALIASES = {"tiny": "vit-tiny", "small": "vit-small", "base": "vit-base"}   # the old `--sizes`


def bench_model(name: str) -> BenchModel:
    if name not in MODELS:
        raise AsitError(f"perf model {name!r} unknown; choose from {', '.join(MODELS)}")
    return MODELS[name]


def encoder_config(name: str, **overrides: Any) -> Any:
    """The resolved encoder config of a benchmark model (with e.g. `trained_frames` overridden)."""
    return encoder_config_from_dict({**bench_model(name).encoder, **overrides})


def encoder_params(name: str) -> int:
    """Parameters of the model's encoder (what an export holds), as `build_encoder` builds it."""
    return sum(p.numel() for p in build_encoder(encoder_config(name)).parameters())


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (process-wide peak)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _identity(model: str) -> dict[str, Any]:
    config = encoder_config(model)
    return {"model": model, "arch": config.arch, "size": config.size, "params": encoder_params(model)}


def _runtime(model: str, precision: str, padding: str, device: torch.device) -> EncoderRuntime:
    torch.manual_seed(0)
    encoder = build_encoder(encoder_config(model, drop_path_rate=0.0)).to(device).eval()
    options = RuntimeOptions(precision=precision, padding=padding)
    return EncoderRuntime(encoder, bench_model(model).frontend, options).to(device)


def inference(model: str, precision: str, device: torch.device, seconds: float, batch: int, repeats: int,
              padding: str = "step") -> dict[str, Any]:
    """Clips/s through the shared runtime (fbank + chunked encoder, all layers kept)."""
    runtime = _runtime(model, precision, padding, device)
    waves = torch.randn(batch, int(seconds * runtime.sample_rate), device=device) * 0.1
    _reset_peak(device)
    times = _timed(lambda: runtime(waves), device, repeats)
    median = statistics.median(times)
    return {"bench": "inference", **_identity(model), "precision": precision, "padding": padding,
            "chunk_frames": runtime.chunk_frames, "seconds_audio": seconds, "audio_seconds_per_clip": seconds,
            "batch": batch, "median_s": median, "clips_per_s": batch / median,
            "realtime_factor": batch * seconds / median, "peak_memory_mb": _peak_memory_mb(device), "times_s": times}


def scaling(model: str, precision: str, device: torch.device, durations: list[float], repeats: int,
            padding: str = "step") -> dict[str, Any]:
    """Runtime cost per second of audio over clip durations: flat means linear cost."""
    runtime = _runtime(model, precision, padding, device)
    rows = []
    for seconds in durations:
        wave = torch.randn(1, int(seconds * runtime.sample_rate), device=device) * 0.1
        _reset_peak(device)
        median = statistics.median(_timed(lambda w=wave: runtime(w, layers=[-1]), device, repeats))
        rows.append({"seconds_audio": seconds, "median_s": median, "s_per_audio_s": median / seconds,
                     "peak_memory_mb": _peak_memory_mb(device)})
    return {"bench": "scaling", **_identity(model), "precision": precision, "padding": padding,
            "chunk_frames": runtime.chunk_frames, "rows": rows}


def pretrain_step(model: str, precision: str, device: torch.device, batch: int, frames: int | None, repeats: int,
                  compile_layers: bool = False) -> dict[str, Any]:
    """Optimizer steps/s of the model's pretraining objective at its paper sizes (ASiT: two views, teacher
    forward, heads, backward, AdamW, EMA; wav2vec 2.0 conformer: span masking, quantiser, contrastive loss over
    K = 100 distractors, backward, AdamW), and where the step's time goes (benchmarks/step_parts.py). `frames`
    (default: the model's crop) is in the model's own frames; `compile_layers`: regional torch.compile of the
    encoders' blocks, as `trainer.compile` does (its first step, the compilation, is timed apart)."""
    spec = bench_model(model)
    frames = frames or spec.crop_frames
    torch.manual_seed(0)
    config = encoder_config(model, trained_frames=frames)
    objective = build_objective(spec.objective, config).to(device)
    if compile_layers:
        objective.compile_layers()
    transform = objective.view_transform()
    views = torch.randn(batch, spec.views, 1, frames, config.num_mel_bins)
    extras = [transform({"views": views[i]}, np.random.default_rng(i)) for i in range(batch)] if transform else [{}]
    batch_data = {"views": views.to(device),
                  **{k: torch.stack([e[k] for e in extras]).to(device) for k in extras[0]}}
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    progress = TrainingProgress(step=0, total_steps=1000, epoch=1, steps_per_epoch=100)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step(clock: StepClock | None) -> None:
        part = clock.part if clock is not None else nullcontext          # nullcontext(name): the step, untimed
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            loss = objective.training_losses(batch_data, progress)["loss"]
        with part("backward"):
            loss.backward()
        objective.after_backward(progress)
        with part("optimizer"):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with part("after_step"):          # ASiT: the teacher's EMA update
            objective.after_optimizer_step(progress)

    _reset_peak(device)
    with freed_memory_kept():           # as `asit pretrain` runs its loop (upstream/host_memory.py)
        start = time.perf_counter()
        step(None)                      # the first step: torch.compile's compilation, when asked for
        _sync(device)
        first_step_s = time.perf_counter() - start
        breakdown = step_breakdown(step, objective, device, repeats, warmup=0)   # the step above warmed up
    median = breakdown["free_step_s"]
    times = breakdown.pop("free_times_s")
    clip_seconds = spec.crop_seconds(frames)
    return {"bench": "pretrain_step", **_identity(model), "objective": spec.objective["name"],
            "trainable_params": sum(p.numel() for p in trainable), "precision": precision,
            "compile_layers": compile_layers, "first_step_s": first_step_s, "batch": batch,
            "views": spec.views, "frames": frames, "frame_shift_ms": spec.frontend.frame_shift_ms,
            "audio_seconds_per_clip": clip_seconds, "median_s": median, "steps_per_s": 1.0 / median,
            "clips_per_s": batch / median, "audio_seconds_per_s": batch * clip_seconds / median,
            "peak_memory_mb": _peak_memory_mb(device), "times_s": times, "breakdown": breakdown}


def environment(device: torch.device) -> dict[str, Any]:
    info = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "device": str(device)}
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = list(os.getloadavg())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_perf(models: list[str], precisions: list[str], device_name: str, out: Path, *, seconds: float = 10.0,
             batch: int = 8, train_batch: int = 8, train_frames: int | None = None, repeats: int = 3,
             durations: list[float] | None = None, benches: tuple[str, ...] = ("inference", "scaling", "pretrain"),
             padding: str = "step", compile_layers: bool = False) -> dict[str, Any]:
    """`models`: names in MODELS (the old ViT size names tiny/small/base are accepted for vit-*)."""
    models = [SIZE_ALIASES.get(m, m) for m in models]
    for name in models:
        bench_model(name)
    device = bench_device(device_name)
    env = environment(device)
    results: list[dict[str, Any]] = []
    for model in models:
        for precision in precisions:
            if "inference" in benches:
                results.append(inference(model, precision, device, seconds, batch, repeats, padding))
                _print(results[-1])
            if "scaling" in benches:
                results.append(scaling(model, precision, device, durations or [1.0, 10.0, 60.0], repeats, padding))
                _print(results[-1])
            if "pretrain" in benches:
                results.append(pretrain_step(model, precision, device, train_batch, train_frames, repeats,
                                             compile_layers))
                _print(results[-1])
    return write_report(out, env, results)


def bench_device(name: str) -> torch.device:
    """The torch device a benchmark runs on, refused before any work when CUDA is asked for and absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AsitError("--device cuda: no CUDA device is visible")
    return device


def write_report(out: Path, env: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark JSON: the environment (with the load average at the end), the time, the result rows."""
    if hasattr(os, "getloadavg"):
        env["loadavg_at_end"] = list(os.getloadavg())
    report = {"environment": env, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    atomic_write_text(out, json.dumps(report, indent=2))
    return report


def _print(row: dict[str, Any]) -> None:
    shown = {k: v for k, v in row.items() if k not in ("times_s", "rows", "breakdown")}
    if "breakdown" in row:
        shown["overhead_fraction"] = row["breakdown"]["overhead_fraction"]
    print(json.dumps(shown), flush=True)


__all__ = ["MODELS", "SIZE_ALIASES", "BenchModel", "encoder_params", "inference", "pretrain_step", "run_perf",
           "scaling"]
