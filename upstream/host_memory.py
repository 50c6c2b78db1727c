"""Keep freed host memory in the process during a training or benchmark loop, instead of handing it back to the
kernel after every large tensor.

glibc serves an allocation above its mmap threshold (at most 32 MiB by default) with a fresh mmap and unmaps it on
free, so every step of a CPU training loop page-faults (and zero-fills) its large temporaries anew: measured on a
2-core machine, a four-step ASiT ViT-S fp32 run took 3.8 M minor page faults (1.1 M with the thresholds raised),
and a step 7.8 s (6.1 s raised; docs/performance.md, "Pretraining step"). Raising both the mmap and the trim
threshold makes freed blocks stay in the heap for the next step to reuse, as jemalloc and tcmalloc (the allocators
PyTorch's CPU tuning guide recommends preloading) do; the peak memory is unchanged.

Scoped (`freed_memory_kept`): `asit pretrain` holds it around its fit and the pretraining-step benchmark around its
steps. On leaving, both thresholds are set back to glibc's initial 128 KiB and the retained memory is trimmed, so
whatever runs next in the process (a suite's next cell, whose peak memory tasks/compute.py reads from the resident
set) starts from a shrunk process. The thresholds then stay at 128 KiB: setting either one turns glibc's dynamic
mmap threshold off for the rest of the process (mallopt(3)), which cannot be undone. `ASIT_KEEP_FREED_MEMORY=0`
leaves glibc untouched.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

OPT_OUT_ENV = "ASIT_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD = -1      # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_KEPT = 2**31 - 1           # mallopt takes an int: blocks up to 2 GiB come from the heap and stay there when freed
_GLIBC_INITIAL = 128 * 1024  # glibc's initial mmap and trim thresholds (DEFAULT_MMAP_THRESHOLD_MIN, DEFAULT_TRIM_...)


def _glibc() -> Any | None:
    """libc with mallopt / malloc_trim typed, or None: not Linux, not glibc (musl), or opted out."""
    if os.environ.get(OPT_OUT_ENV, "1").strip() == "0" or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


@contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Within: large freed blocks stay in the process for reuse (yields whether that could be set). On leaving:
    both thresholds fixed at glibc's initial 128 KiB (no longer dynamic), and the heap trimmed back to what is still
    in use."""
    libc = _glibc()
    kept = libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEPT)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _KEPT))
    try:
        yield kept
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_INITIAL)
            libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_INITIAL)
            libc.malloc_trim(0)


__all__ = ["OPT_OUT_ENV", "freed_memory_kept"]
