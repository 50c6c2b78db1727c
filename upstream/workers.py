"""DataLoader worker processes: how many (`num_workers: auto`) and what their errors look like to the user."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Any, Iterator

from .errors import AsitError

AUTO = "auto"
MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or `taskset`'s limit), else all."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):       # macOS / Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def resolve_num_workers(value: Any, key: str = "num_workers", processes: int = 1) -> int:
    """`auto` -> min(8, usable cores / `processes` - 1), at least 0: the cores are shared by the training processes
    of this machine (DDP ranks), and each leaves one core to itself; a whole number >= 0 is used as given; anything
    else is refused with an error naming `key`."""
    if value == AUTO:
        return max(0, min(MAX_AUTO_WORKERS, usable_cores() // max(1, processes) - 1))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise AsitError(f"{key} must be 'auto' or a whole number >= 0, got {value!r}")


WORKER_BANNER = re.compile(r"Caught (\w+) in DataLoader worker process \d+")


def worker_message(exc: BaseException) -> str | None:
    """The original message of an AsitError raised inside a DataLoader worker, on one line; None when `exc` is not
    one. torch re-raises it in the main process as the same class built from the worker's traceback text:
    "Caught AsitError in DataLoader worker process N.\\nOriginal Traceback …\\nupstream.errors.AsitError: <message>"."""
    text = str(exc)
    banner = WORKER_BANNER.match(text)
    if not isinstance(exc, AsitError) or banner is None:
        return None
    lines = text.splitlines()
    head = re.compile(rf"^(?:\w+\.)*{re.escape(banner.group(1))}: ")
    for i in range(len(lines) - 1, 0, -1):
        found = head.match(lines[i])
        if found:
            return " ".join(" ".join(lines[i:])[found.end():].split())
    return None


@contextmanager
def worker_errors() -> Iterator[None]:
    """Re-raise an AsitError that a DataLoader worker raised (a corrupt audio file, …) as the one-line AsitError the
    worker raised, instead of torch's multi-line 'Caught AsitError in DataLoader worker process 0' block."""
    try:
        yield
    except AsitError as exc:
        message = worker_message(exc)
        if message is None:
            raise
        raise AsitError(message) from None


__all__ = ["AUTO", "resolve_num_workers", "usable_cores", "worker_errors", "worker_message"]
