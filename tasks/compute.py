"""What one cell cost: wall time, the device and precision it ran on, peak memory, encoder forwards.

A leaderboard row is only comparable to another when its cost is known too (a probe that ran no encoder forward —
every embedding came from the cache — is not a cheaper method). `tasks.run.run_task` wraps one runner call:

    with measure_compute() as meter:
        result = run_probe(...)            # or run_finetune(...)
    result.extra["compute"] = meter.summary(result.extra)

The runner reports what only it knows in `extra`: `device` (the torch device it actually used), `precision`,
`encoder_forwards` (chunks) and `encoder_forward_calls`, counted by `ForwardCounter`; the meter adds wall time, the
device's name and peak memory.

Peak memory is the process's own. On CUDA: `torch.cuda.max_memory_allocated` of the device used (tensors allocated
by PyTorch's caching allocator; the CUDA context and cached-but-free blocks are not in it), reset when the block is
entered. On CPU (Linux): the peak resident set size (`VmHWM` of /proc/self/status), reset on entering by writing "5" to
/proc/self/clear_refs; where that reset is refused, the value is the peak since the process started and
`peak_memory_kind` says so. DataLoader worker processes (audio decoding) are separate processes and are not counted;
under DDP each rank measures itself, and the row is rank 0's.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from upstream.encoders import AudioEncoder
from upstream.workers import usable_cores

CUDA_KIND = "cuda max_memory_allocated"
RSS_KIND = "process peak RSS (VmHWM)"
RSS_LIFETIME_KIND = "process peak RSS (VmHWM) since the process started"
RUSAGE_KIND = "process peak RSS (ru_maxrss) since the process started"

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class ForwardCounter:
    """Counts encoder forward passes (calls and chunks) through a hook on the encoder's stem, which every forward
    runs exactly once (ViT: the patch embedding, conformer: the stacking projection)."""

    def __init__(self, encoder: AudioEncoder) -> None:
        self.calls = 0
        self.chunks = 0
        self._handle = encoder.stem.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.calls += 1
        self.chunks += int(inputs[0].shape[0])

    def close(self) -> None:
        self._handle.remove()


def device_name(device: str | torch.device) -> str:
    """A human name for the device a cell ran on: the GPU's model for CUDA, else the CPU's model with the number of
    cores this process may use (what a CPU timing depends on)."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_name(index)
    if device.type != "cpu":
        return device.type
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    cores = usable_cores()
    return f"{model} ({cores} core{'s' if cores != 1 else ''})"


def _status_kb(field: str) -> float | None:
    """A `kB` field of /proc/self/status (None off Linux)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Make VmHWM restart from the current RSS (Linux ≥ 4.0, for this process only); False when refused."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb(reset: bool) -> tuple[float | None, str]:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0, RSS_KIND if reset else RSS_LIFETIME_KIND
    try:
        import resource

        peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except (ImportError, OSError):
        return None, "unmeasured"
    # kilobytes on Linux, bytes on macOS
    return (peak / 2 ** 20 if platform.system() == "Darwin" else peak / 1024.0), RUSAGE_KIND


class ComputeMeter:
    """Wall time and peak memory of the block it is entered for; `summary(extra)` adds what the runner reported."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._end: float | None = None
        self._rss_reset = False
        self._rss: tuple[float | None, str] | None = None
        self._cuda_peaks: dict[int, float] | None = None

    def __enter__(self) -> ComputeMeter:
        self._rss_reset = _reset_peak_rss()
        # CUDA peaks only exist once the process has used CUDA; before that nothing was allocated, so an
        # uninitialised process needs no reset (and initialising CUDA here would cost a CPU-only cell a context)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for index in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(index)
        self._start, self._end = time.perf_counter(), None
        self._rss, self._cuda_peaks = None, None
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._end = time.perf_counter()
        self._rss, self._cuda_peaks = self._read_peaks()

    def _read_peaks(self) -> tuple[tuple[float | None, str], dict[int, float]]:
        cuda: dict[int, float] = {}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = {index: torch.cuda.max_memory_allocated(index) / 2 ** 20
                    for index in range(torch.cuda.device_count())}
        return _peak_rss_mb(self._rss_reset), cuda

    def summary(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The JSON-able compute record of a result: the meter's measures (up to leaving the block, or up to now
        while still inside it) and `device`, `precision`, `encoder_forwards`, `encoder_forward_calls` from the
        runner's `extra` (a count the runner did not report is null, never a guessed 0)."""
        if self._start is None:
            raise RuntimeError("ComputeMeter.summary called before the meter was entered")
        end = self._end if self._end is not None else time.perf_counter()
        rss, cuda = (self._rss, self._cuda_peaks) if self._rss is not None else self._read_peaks()
        assert cuda is not None
        device = torch.device(str(extra.get("device", "cpu")))
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            peak, kind = cuda.get(index, 0.0), CUDA_KIND
        else:
            peak, kind = rss
        forwards, calls = extra.get("encoder_forwards"), extra.get("encoder_forward_calls")
        return {
            "wall_s": round(end - self._start, 3),
            "device": device_name(device),
            "device_type": device.type,
            "precision": str(extra.get("precision", "")),
            "peak_memory_mb": round(peak, 1) if peak is not None else None,
            "peak_memory_kind": kind,
            "encoder_forwards": int(forwards) if forwards is not None else None,
            "encoder_forward_calls": int(calls) if calls is not None else None,
        }


def measure_compute() -> ComputeMeter:
    """A meter to enter around one cell (`with measure_compute() as meter:`)."""
    return ComputeMeter()


__all__ = ["ComputeMeter", "ForwardCounter", "device_name", "measure_compute"]
