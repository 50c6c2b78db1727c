"""The results store: one JSON-lines file, one complete row per finished (or failed) cell.

Why JSON lines and not one file per cell: a row is appended as one complete line under an exclusive `flock`, then
fsync'ed. Linux may still cut a large write short when a kill -9 arrives mid-write (the page-cache write loop stops
between pages on a fatal signal), and a power cut or full disk can do the same, so the file holds whole rows plus, at
worst, one torn last line. Writers hold the exclusive lock for the whole write and the lock dies with them, so a torn
tail seen under the lock is always a dead writer's partial row: the next append cuts it off before writing. Readers
take a shared lock, so they never see a live writer's partial line; a torn tail left by a dead writer can never parse
as a row (a strict prefix of a one-line JSON object is not valid JSON), so until the next append the reader skips it
and counts it in `skipped_lines`.

"No duplicated cells": `append` re-reads the keys under the same lock and refuses a second successful row for a key
that already has one, so two suites writing to one store (or a rerun racing a crashed run's last write) cannot
duplicate a cell. Failed rows are history: a cell whose last row failed is retried, and its later success is the
row the tables use. Rows are never rewritten or deleted.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from tasks.api import EncoderSpec, TaskCell, TaskResult, hear_module_identity
from upstream.errors import AsitError
from upstream.hashing import file_sha256
from upstream.identity import encoder_identity

STORE_VERSION = 1
STATUS_OK = "ok"
STATUS_FAILED = "failed"
REQUIRED_FIELDS = ("store_version", "key", "status", "encoder", "task", "mode", "protocol", "seed", "fold")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------- provenance

@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's commit (`git rev-parse HEAD`) with "-dirty" when tracked files differ; "unknown" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def cell_config(cell: TaskCell) -> dict[str, Any]:
    """The cell as plain data (what a row records under `config`)."""
    return asdict(cell)


def checkpoint_identity(path: str | Path) -> str:
    """What a checkpoint's rows and cell keys are keyed by (`checkpoint_sha256`): the weights + config identity of
    its teacher encoder (upstream.identity.encoder_identity), not its file's bytes, so `asit export` of a run's
    `last.ckpt` and the run's own `encoder.pt` are one encoder. Floors (init scratch / fbank_stats) stay apart by
    `cell_key`'s init and seed.

    A file that exists but does not load as an encoder (a placeholder, a format this version cannot read) is keyed
    by its bytes (`file_sha256`), as every checkpoint was before; its cells then fail when they load it, with the
    loader's error. A missing file raises AsitError naming it."""
    try:
        return encoder_identity(path)
    except AsitError:
        return file_sha256(path)


def spec_identity(spec: EncoderSpec) -> str:
    """What an encoder spec's rows and cell keys are keyed by (`checkpoint_sha256`): `checkpoint_identity` of its
    file for our checkpoints; for a HEAR module (`spec.module`), tasks.api.hear_module_identity — SHA-256 over the
    module name, its model file's bytes and its options (a digest of other content than any checkpoint identity's),
    so a module's cells are apart from ours and keep their keys while the module name, file and options stay."""
    return hear_module_identity(spec) if spec.module else checkpoint_identity(spec.path)


def cell_key(cell: TaskCell, checkpoint_sha256: str, recipe_digest: str = "") -> str:
    """Identity of a cell for resuming: encoder name, init and checkpoint identity (`checkpoint_identity`: weights +
    config, whatever file holds them; `spec_identity` for a HEAR module), task, mode, protocol, seed, fold, and what
    the cell computes: the digest of its resolved recipe when there is one (so editing a recipe file's defaults
    reruns the cells it changes, while naming the same recipe another way, or moving its file, does not), else the
    recipe name and overrides as given. Paths are left out on purpose: moving a checkpoint or a dataset does not
    invalidate results."""
    identity = {
        "encoder": cell.encoder.name, "init": cell.encoder.init, "checkpoint_sha256": checkpoint_sha256,
        "task": cell.task, "mode": cell.mode, "protocol": cell.protocol, "seed": cell.seed, "fold": cell.fold,
        "recipe_digest": recipe_digest,
    }
    if not recipe_digest:
        identity.update(recipe=cell.recipe, overrides=cell.overrides)
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def settings_digest(settings: dict[str, Any], content: bytes = b"") -> str:
    """Digest of the settings (and optional file content) of a run made by another tool (heareval, s3prl), used as
    its recipe digest: runs with other settings are other cells and other leaderboard rows."""
    canonical = json.dumps(settings, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(canonical + b"\0" + content).hexdigest()[:16]


def _file_sha256_or_empty(path: str) -> str:
    try:
        return file_sha256(path) if path else ""
    except AsitError:
        return ""


def make_row(cell: TaskCell, key: str, checkpoint_sha256: str, *, result: TaskResult | None = None,
             error: str | None = None, duration_s: float = 0.0, suite: str = "",
             pretraining: str = "", recipe_digest: str = "",
             checkpoint_file_sha256: str | None = None, pretrain_run: str = "") -> dict[str, Any]:
    """One store row for a finished cell (`result`) or a failed one (`error`).

    `pretrain_run`: the suite's pretraining run whose seed-`seed` encoder the cell measured (suites that pretrain
    their encoders, benchmarks/suite_pretrain.py): its rows hold one checkpoint per seed by design.

    `checkpoint_sha256` keeps its historical field name but holds the checkpoint's weights + config identity
    (`checkpoint_identity`); `checkpoint_file_sha256` is the SHA-256 of the file's bytes, for provenance (default:
    hashed here, memoised; "" when the file cannot be read)."""
    if (result is None) == (error is None):
        raise ValueError("a row has either a result or an error")
    if checkpoint_file_sha256 is None:
        checkpoint_file_sha256 = _file_sha256_or_empty(cell.encoder.path)
    return {
        "store_version": STORE_VERSION,
        "key": key,
        "status": STATUS_OK if result is not None else STATUS_FAILED,
        "suite": suite,
        "encoder": cell.encoder.name,
        "init": cell.encoder.init,
        "checkpoint": cell.encoder.path,
        "checkpoint_sha256": checkpoint_sha256,
        "checkpoint_file_sha256": checkpoint_file_sha256,
        "pretraining": pretraining,
        "pretrain_run": pretrain_run,
        "task": cell.task,
        "mode": cell.mode,
        "protocol": result.extra.get("protocol", cell.protocol) if result is not None else cell.protocol,
        "recipe_digest": recipe_digest,
        "seed": cell.seed,
        "fold": cell.fold,
        "metric": result.metric if result is not None else None,
        "value": float(result.value) if result is not None else None,
        "extra": _jsonable(result.extra) if result is not None else {},
        "error": error,
        "config": _jsonable(cell_config(cell)),
        "git_commit": git_commit(),
        "duration_s": round(float(duration_s), 3),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }


def _jsonable(value: Any) -> Any:
    """JSON-safe copy (NaN/inf → None, tensors/paths → numbers/strings) so a row always serialises."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item())
        except (ValueError, RuntimeError):
            pass
    return str(value)


# ---------------------------------------------------------------------------------------------------- the store

class ResultsStore:
    """Append-only JSON-lines file of result rows (see the module docstring for the crash guarantees)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.skipped_lines = 0

    def append(self, row: dict[str, Any]) -> bool:
        """Append one row atomically. Returns False (and writes nothing) when `row` is a success for a key that
        already has a successful row."""
        missing = [name for name in REQUIRED_FIELDS if name not in row]
        if missing:
            raise ValueError(f"result row lacks {', '.join(missing)}")
        line = json.dumps(row, sort_keys=True, allow_nan=False, separators=(",", ":")).encode("utf-8") + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            content = _read_fd(fd)
            if row["status"] == STATUS_OK and row["key"] in _finished_keys(_parse(content)[0]):
                return False
            if content and not content.endswith(b"\n"):   # a dead writer's partial row (see the module docstring)
                os.ftruncate(fd, content.rfind(b"\n") + 1)
            _write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)                     # closing releases the flock
        if created:
            _fsync_dir(self.path.parent)
        return True

    def append_all(self, rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Append each row (see `append`); returns (rows added, successes already present)."""
        added = [self.append(row) for row in rows]
        return sum(added), len(added) - sum(added)

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row, in write order (torn or foreign lines are skipped and counted)."""
        try:
            content = _read_locked(self.path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise AsitError(f"results store {self.path} cannot be read ({exc.strerror})") from None
        rows, self.skipped_lines = _parse(content)
        return rows

    def finished_keys(self) -> set[str]:
        return _finished_keys(self.rows())

    def latest(self) -> pd.DataFrame:
        """One row per cell key: its successful row, or its last failed row if it never succeeded."""
        rows = self.rows()
        if not rows:
            return pd.DataFrame(columns=list(REQUIRED_FIELDS))
        frame = pd.DataFrame(rows)
        frame["_ok"] = frame["status"] == STATUS_OK
        frame["_order"] = range(len(frame))
        frame = frame.sort_values(["_ok", "_order"]).groupby("key", sort=False).tail(1)
        return frame.sort_values("_order").drop(columns=["_ok", "_order"]).reset_index(drop=True)

    def successes(self) -> pd.DataFrame:
        latest = self.latest()
        return latest[latest["status"] == STATUS_OK].reset_index(drop=True)


def _read_locked(path: Path) -> bytes:
    """The file's bytes under a shared lock, so no live writer is mid-line while we read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return _read_fd(fd)
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse(content: bytes) -> tuple[list[dict[str, Any]], int]:
    rows, skipped = [], 0
    for raw in content.split(b"\n"):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(row, dict) or any(name not in row for name in REQUIRED_FIELDS):
            skipped += 1
            continue
        rows.append(row)
    return rows, skipped


def _finished_keys(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {row["key"] for row in rows if row.get("status") == STATUS_OK}


__all__ = ["ResultsStore", "STATUS_OK", "STATUS_FAILED", "cell_key", "cell_config", "checkpoint_identity",
           "file_sha256", "git_commit", "make_row", "spec_identity"]
