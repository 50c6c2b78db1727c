"""Performance benchmarks: encoder inference throughput, its scaling with duration, and ASiT pretraining step
throughput, for each ViT size and precision. Results are JSON (never timed assertions in tests).

    asit perf --sizes tiny small base --precisions fp32 bf16 --device cuda --out benchmarks/results/perf-h100.json
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from upstream.atomic import atomic_write_text
from upstream.encoder import AudioViT, EncoderConfig
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig
from upstream.objectives import build_objective
from upstream.runtime import EncoderRuntime
from upstream.schedules import TrainingProgress


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def inference(size: str, precision: str, device: torch.device, seconds: float, batch: int, repeats: int
              ) -> dict[str, Any]:
    """Clips/s through the shared runtime (fbank + chunked encoder, all layers kept)."""
    torch.manual_seed(0)
    encoder = AudioViT(EncoderConfig(size=size, drop_path_rate=0.0)).to(device).eval()
    runtime = EncoderRuntime(encoder, FrontendConfig(), precision=precision).to(device)
    waves = torch.randn(batch, int(seconds * runtime.sample_rate), device=device) * 0.1
    _reset_peak(device)
    times = _timed(lambda: runtime(waves), device, repeats)
    median = statistics.median(times)
    return {"bench": "inference", "size": size, "precision": precision, "seconds_audio": seconds, "batch": batch,
            "median_s": median, "clips_per_s": batch / median, "realtime_factor": batch * seconds / median,
            "peak_memory_mb": _peak_memory_mb(device), "times_s": times}


def scaling(size: str, precision: str, device: torch.device, durations: list[float], repeats: int
            ) -> dict[str, Any]:
    """Runtime cost per second of audio over clip durations: flat means linear cost."""
    torch.manual_seed(0)
    encoder = AudioViT(EncoderConfig(size=size, drop_path_rate=0.0)).to(device).eval()
    runtime = EncoderRuntime(encoder, FrontendConfig(), precision=precision).to(device)
    rows = []
    for seconds in durations:
        wave = torch.randn(1, int(seconds * runtime.sample_rate), device=device) * 0.1
        _reset_peak(device)
        median = statistics.median(_timed(lambda: runtime(wave, layers=[-1]), device, repeats))
        rows.append({"seconds_audio": seconds, "median_s": median, "s_per_audio_s": median / seconds,
                     "peak_memory_mb": _peak_memory_mb(device)})
    return {"bench": "scaling", "size": size, "precision": precision, "rows": rows}


def pretrain_step(size: str, precision: str, device: torch.device, batch: int, frames: int, repeats: int
                  ) -> dict[str, Any]:
    """ASiT optimizer steps/s at the paper's head sizes (two views, teacher forward, heads, backward, AdamW)."""
    torch.manual_seed(0)
    objective = build_objective({"name": "asit"}, EncoderConfig(size=size, trained_frames=frames)).to(device)
    transform = objective.view_transform()
    views = torch.randn(batch, 2, 1, frames, 128)
    extras = [transform(views[i], np.random.default_rng(i)) for i in range(batch)]
    batch_data = {"views": views.to(device),
                  **{k: torch.stack([e[k] for e in extras]).to(device) for k in extras[0]}}
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-4)
    progress = TrainingProgress(step=0, total_steps=1000, epoch=1, steps_per_epoch=100)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            loss = objective.training_losses(batch_data, progress)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        objective.after_optimizer_step(progress)

    _reset_peak(device)
    times = _timed(step, device, repeats)
    median = statistics.median(times)
    return {"bench": "pretrain_step", "size": size, "precision": precision, "batch": batch, "frames": frames,
            "median_s": median, "clips_per_s": batch / median, "peak_memory_mb": _peak_memory_mb(device),
            "times_s": times}


def environment(device: torch.device) -> dict[str, Any]:
    info = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_perf(sizes: list[str], precisions: list[str], device_name: str, out: Path, *, seconds: float = 10.0,
             batch: int = 8, train_batch: int = 8, train_frames: int = 592, repeats: int = 3,
             durations: list[float] | None = None, benches: tuple[str, ...] = ("inference", "scaling", "pretrain")
             ) -> dict[str, Any]:
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AsitError("--device cuda: no CUDA device is visible")
    results: list[dict[str, Any]] = []
    for size in sizes:
        for precision in precisions:
            if "inference" in benches:
                results.append(inference(size, precision, device, seconds, batch, repeats))
            if "scaling" in benches:
                results.append(scaling(size, precision, device, durations or [1.0, 10.0, 60.0], repeats))
            if "pretrain" in benches:
                results.append(pretrain_step(size, precision, device, train_batch, train_frames, repeats))
            print(json.dumps({k: v for k, v in results[-1].items() if k not in ("times_s", "rows")}), flush=True)
    report = {"environment": environment(device), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "results": results}
    atomic_write_text(out, json.dumps(report, indent=2))
    return report


__all__ = ["run_perf", "inference", "scaling", "pretrain_step"]
