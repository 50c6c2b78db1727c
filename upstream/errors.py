"""One exception type for user-facing errors: the CLI prints it as one line instead of a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


class AsitError(Exception):
    """Bad input (argument, file, checkpoint) explained in a message that names the culprit."""


def cause(exc: BaseException) -> str:
    """`Type: first line of its message`: what a one-line error quotes of the library exception behind it."""
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0] if text else ''}"


def bad_rows(rows: Sequence[str], source: Path, reason: str) -> AsitError:
    """One error for all malformed lines of a listing file: how many, where, why, and the first three."""
    shown = "; ".join(rows[:3])
    return AsitError(f"{len(rows)} malformed line(s) in {source} ({reason}), e.g. {shown}")
