"""Compute records: wall time, device, precision, peak memory and encoder forwards of one cell (tasks/compute.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks import compute
from tasks.compute import CUDA_KIND, RSS_KIND, RSS_LIFETIME_KIND, ForwardCounter, device_name, measure_compute
from upstream.encoders import AudioViT

from conftest import TINY_ENCODER

linux_only = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc/self/status (Linux)")

MB = 2 ** 20
ARRAY_MB = 192


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@linux_only
def test_a_cpu_block_records_its_peak_memory_wall_time_and_the_runners_counts() -> None:
    encoder = AudioViT(TINY_ENCODER).eval()
    extra = {"device": "cpu", "precision": "fp32"}
    outer = time.perf_counter()
    with measure_compute() as meter:
        before = rss_mb()
        big = np.ones(ARRAY_MB * MB // 8)                    # written, so every page is resident
        counter = ForwardCounter(encoder)
        with torch.no_grad():
            encoder.forward_features(torch.randn(3, 1, 64, 128))
            encoder.forward_features(torch.randn(2, 1, 64, 128))
        counter.close()
        del big
    elapsed = time.perf_counter() - outer
    extra.update(encoder_forwards=counter.chunks, encoder_forward_calls=counter.calls)
    record = meter.summary(extra)
    assert json.loads(json.dumps(record)) == record, "JSON-able as it is"
    assert set(record) == {"wall_s", "device", "device_type", "precision", "peak_memory_mb", "peak_memory_kind",
                           "encoder_forwards", "encoder_forward_calls"}
    assert 0.0 <= record["wall_s"] <= elapsed + 1e-3
    assert record["device_type"] == "cpu" and record["precision"] == "fp32"
    assert record["device"].strip() and record["device"].endswith(("core)", "cores)"))
    assert (record["encoder_forwards"], record["encoder_forward_calls"]) == (5, 2)
    assert record["peak_memory_kind"] in (RSS_KIND, RSS_LIFETIME_KIND)
    assert record["peak_memory_mb"] - before >= 0.8 * ARRAY_MB, "the array allocated inside the block is counted"
    assert meter.summary(extra) == record, "a summary after the block is fixed at the block's end"

    with measure_compute() as quiet:                          # the big array is gone: a fresh peak, if reset works
        pass
    again = quiet.summary({"device": "cpu", "precision": "fp32"})
    assert again["encoder_forwards"] is None and again["encoder_forward_calls"] is None, "not reported, not 0"
    if again["peak_memory_kind"] == RSS_KIND:
        assert again["peak_memory_mb"] < record["peak_memory_mb"] - 0.5 * ARRAY_MB


@linux_only
def test_a_refused_peak_reset_says_the_peak_is_the_processs_lifetime(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute, "_CLEAR_REFS", tmp_path / "absent" / "clear_refs")
    with measure_compute() as meter:
        pass
    record = meter.summary({"device": "cpu", "precision": "bf16"})
    assert record["peak_memory_kind"] == RSS_LIFETIME_KIND and record["peak_memory_mb"] > 0


def test_a_cuda_row_reads_the_allocators_peak_of_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch, driven through a stand-in torch.cuda (no GPU needed): peaks are reset on entering, and the
    row reports the used device's max_memory_allocated under that device's name."""
    resets: list[int] = []
    peaks = {0: 3 * MB, 1: 700 * MB}
    fake = {"is_available": lambda: True, "is_initialized": lambda: True, "device_count": lambda: 2,
            "current_device": lambda: 0, "reset_peak_memory_stats": resets.append,
            "max_memory_allocated": lambda index: peaks[index], "get_device_name": lambda index: f"GPU number {index}"}
    for name, value in fake.items():
        monkeypatch.setattr(torch.cuda, name, value)
    with measure_compute() as meter:
        assert resets == [0, 1]
    record = meter.summary({"device": "cuda:1", "precision": "bf16-mixed", "encoder_forwards": 4,
                            "encoder_forward_calls": 1})
    assert (record["device"], record["device_type"], record["precision"]) == ("GPU number 1", "cuda", "bf16-mixed")
    assert (record["peak_memory_mb"], record["peak_memory_kind"]) == (700.0, CUDA_KIND)
    assert meter.summary({"device": "cuda", "precision": "32-true"})["peak_memory_mb"] == 3.0, "current device"


def test_device_names_and_misuse() -> None:
    assert "core" in device_name("cpu") and device_name(torch.device("cpu")) == device_name("cpu")
    with pytest.raises(RuntimeError, match="before the meter was entered"):
        measure_compute().summary({"device": "cpu"})
