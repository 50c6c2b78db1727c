"""ASiT as an s3prl upstream: the expert over the shared encoder runtime, hub entries, the one compat module for
s3prl 0.4.18 on today's stack, the `asit s3prl` launcher and SUPERB downstream configs. See docs/s3prl.md.

Importing this package does not import s3prl (whose import needs `compat.install()` first).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AsitError

CONFIG_DIR = Path(__file__).parent / "configs"
TASKS = ("speech_commands", "voxceleb1")     # s3prl downstream names (-d)
PROFILES = ("superb", "cpu_smoke")


def config_path(task: str, profile: str) -> Path:
    """The shipped downstream config template of a task (`speech_commands`, `voxceleb1`) and profile."""
    if task not in TASKS:
        raise AsitError(f"no s3prl config for task {task!r}; shipped: {', '.join(TASKS)}")
    if profile not in PROFILES:
        raise AsitError(f"unknown s3prl config profile {profile!r}; shipped: {', '.join(PROFILES)}")
    return CONFIG_DIR / f"{task}_{profile}.yaml"
