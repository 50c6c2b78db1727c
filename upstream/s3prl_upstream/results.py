"""Reading s3prl's own results: the `log.log` its speech_commands/voxceleb1 downstreams append to in the expdir.

Lines look like `dev at step 4000: 0.93` and `test at step 0: 0.95` (`-m evaluate` logs at step 0); the
`New best on dev at step N: v` lines repeat a dev value and are skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import AsitError

_LINE = re.compile(r"^(?P<split>[\w.-]+) at step (?P<step>\d+): (?P<value>\S+)$")


@dataclass(frozen=True)
class LogRecord:
    split: str
    step: int
    value: float


def read_log(expdir: str | Path) -> list[LogRecord]:
    """Every metric line of `expdir/log.log`, in file order."""
    path = Path(expdir) / "log.log"
    if not path.is_file():
        raise AsitError(f"no s3prl log at {path} (did the run reach an evaluation step?)")
    records = []
    for line in path.read_text().splitlines():
        match = _LINE.match(line.strip())
        if match:
            try:
                value = float(match["value"])
            except ValueError:
                value = math.nan
            records.append(LogRecord(match["split"], int(match["step"]), value))
    return records


def last_value(expdir: str | Path, split: str = "test", step: int | None = None) -> float:
    """The latest logged value (accuracy for KS/SID) of a split, optionally at a given step."""
    found = [r for r in read_log(expdir) if r.split == split and (step is None or r.step == step)]
    if not found:
        at = "" if step is None else f" at step {step}"
        raise AsitError(f"{Path(expdir) / 'log.log'} has no '{split}' result{at}")
    return found[-1].value
