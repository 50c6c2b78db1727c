"""`precision: auto`: bf16 where the hardware computes it fast, fp32 elsewhere.

bf16 autocast roughly doubles the runtime's throughput on CPUs with AMX or AVX512-BF16 and on CUDA devices from
Ampere (compute capability 8.0) on, and is several times *slower* than fp32 on CPUs without them (it is emulated:
docs/performance.md measured 4–7× on an AVX2 EPYC). Embeddings agree with fp32 to a cosine above 0.999
(tests/test_precision.py), so `auto` is the runtime's default and every result row records what it resolved to.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .errors import AsitError

PRECISIONS = ("auto", "fp32", "bf16")


@lru_cache(maxsize=None)
def _cpu_has_fast_bf16() -> bool:
    # torch's own CPUID probes (private but stable since torch 2.1); absent -> assume no native bf16
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)


def fast_bf16(device: torch.device) -> bool:
    """Whether `device` has native bf16 matrix units (CPU: AMX or AVX512-BF16; CUDA: compute capability >= 8.0)."""
    if device.type == "cpu":
        return _cpu_has_fast_bf16()
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """`auto` -> bf16 or fp32 for this device; fp32 and bf16 stay as asked."""
    if precision not in PRECISIONS:
        raise AsitError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if fast_bf16(torch.device(device)) else "fp32"
