"""upstream.host_memory: within `freed_memory_kept` a freed 256 MiB block stays resident for reuse instead of being
unmapped; leaving it restores glibc's behaviour and gives the retained memory back; the opt-out does nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from upstream.host_memory import OPT_OUT_ENV

# allocates, touches and frees 256 MiB through libc inside the context and again after it; prints whether it could
# be set, then the resident set in MiB: before and after the free inside, after leaving, and after the second free
_PROBE = """
import ctypes, sys
sys.path.insert(0, {root!r})
from upstream.host_memory import freed_memory_kept
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
def touched(size=256 * 2**20):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
with freed_memory_kept() as kept:
    block = touched()
    inside_before = rss()
    libc.free(block)
    inside_after = rss()
left = rss()
block = touched()
outside_before = rss()
libc.free(block)
print(kept, inside_before, inside_after, left, outside_before, rss())
"""


def _probe(opt_out: bool) -> list[str]:
    env = {**os.environ, OPT_OUT_ENV: "0" if opt_out else "1"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", _PROBE.format(root=root)], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_blocks_stay_resident_only_inside_the_context() -> None:
    kept, *mib = _probe(opt_out=False)
    inside_before, inside_after, left, outside_before, outside_after = map(float, mib)
    assert kept == "True"
    assert inside_after > inside_before - 16          # freed inside: stayed in the heap for the next allocation
    assert left < inside_before - 200                 # leaving trims what was kept
    assert outside_after < outside_before - 200       # and glibc unmaps large blocks at free again


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_the_opt_out_keeps_glibc_defaults() -> None:
    kept, inside_before, inside_after, *_ = _probe(opt_out=True)
    assert kept == "False"
    assert float(inside_after) < float(inside_before) - 200
