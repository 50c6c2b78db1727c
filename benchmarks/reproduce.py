"""`asit reproduce ROW`: re-run one stored cell from its provenance and compare the new number with the stored one.

Why: a leaderboard number is only as good as the claim that the same code, weights, recipe and data give it again.
A row records all four (git_commit, checkpoint_sha256, recipe_digest, extra.data_fingerprint); `check_provenance`
refuses, listing every difference at once, when any of them no longer matches, because a re-run on other inputs
says nothing about the row. When they all match the cell is rebuilt from the row's `config`, run by the task
runner in a fresh folder (probe cells with a fresh embedding cache, so the encoder runs again) and compared with
the row: identical, within the row's 95 % clip-bootstrap interval, or outside it. The new run is never written to
a results store (the row stays the record); its summary goes to `<work_dir>/reproduction.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from tasks.api import MODES, TaskCell
from upstream.atomic import atomic_write_text
from upstream.config import deep_merge, from_dict
from upstream.errors import AsitError

from . import results as results_module
from .results import STATUS_OK, ResultsStore, cell_key, spec_identity
from .stats import CONFIDENCE, Interval, bootstrap_interval, row_predictions
from .suite import DEFAULT_RUNNER, Runner, resolve_runner

MIN_ID_LENGTH = 6
IDENTICAL_TOLERANCE = 1e-9        # |new − stored| at or below this is the same number
SUMMARY_FILE = "reproduction.json"
DEFAULT_WORK_ROOT = Path("runs") / "reproduce"
IDENTICAL = "identical"
WITHIN = "within the stored row's 95 % interval"
OUTSIDE = "outside the stored row's 95 % interval"
NO_INTERVAL = "different, and the stored row has no interval to judge it by"
_SHOWN_CANDIDATES = 10


# ------------------------------------------------------------------------------------------------- finding a row

def _label(row: Mapping[str, Any]) -> str:
    fold = f" fold {row.get('fold')}" if row.get("fold") is not None else ""
    return f"{row.get('encoder')} {row.get('task')} {row.get('mode')} seed {row.get('seed')}{fold}"


def find_row(row_id: str, stores: Sequence[str | Path]) -> dict[str, Any]:
    """The successful row whose key equals or starts with `row_id` (at least 6 characters) in the stores (files, or
    folders of *.jsonl); the first store wins when two hold the same key, as in `asit table`. HEAR and s3prl rows
    are refused: their numbers come from heareval / s3prl, which `asit reproduce` does not run."""
    from .table import store_files

    wanted = row_id.strip().lower()
    if len(wanted) < MIN_ID_LENGTH:
        raise AsitError(f"row id {row_id!r} is too short: give at least {MIN_ID_LENGTH} characters of the row's key "
                        "(`asit bench SUITE --dry-run` prints them)")
    files = store_files(stores)
    if not files:
        raise AsitError(f"no results store (*.jsonl) in {', '.join(map(str, stores))}")
    found: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for path in files:
        for row in ResultsStore(path).rows():
            key = str(row["key"])
            if not key.startswith(wanted):
                continue
            target = found if row.get("status") == STATUS_OK else failed
            target.setdefault(key, row)
    if len(found) > 1:
        shown = "; ".join(f"{key[:12]} {_label(row)}" for key, row in sorted(found.items())[:_SHOWN_CANDIDATES])
        more = f" and {len(found) - _SHOWN_CANDIDATES} more" if len(found) > _SHOWN_CANDIDATES else ""
        raise AsitError(f"row id {row_id!r} matches {len(found)} rows: {shown}{more}; give more characters")
    if not found:
        where = ", ".join(map(str, files))
        if failed:
            key, row = next(iter(sorted(failed.items())))
            error = str(row.get("error") or "").splitlines()[0] if row.get("error") else "no error recorded"
            raise AsitError(f"row {key[:12]} ({_label(row)}) in {where} only failed ({error}): there is no number "
                            "to reproduce; rerun its suite with `asit bench`")
        raise AsitError(f"no successful row with key {row_id!r} in {where}")
    row = next(iter(found.values()))
    _refuse_foreign(row)
    return row


def _refuse_foreign(row: Mapping[str, Any]) -> None:
    """HEAR / s3prl rows (modes hear, s3prl-*) hold another tool's number: say how to redo them instead."""
    mode = str(row.get("mode"))
    if mode in MODES:
        return
    extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
    config = row.get("config") if isinstance(row.get("config"), dict) else {}
    folder = extra.get("expdir") or extra.get("embeddings") or config.get("data_root") or ""
    at = f" ({folder})" if folder else ""
    key = str(row.get("key"))[:12]
    if mode == "hear":
        raise AsitError(f"row {key} is a HEAR row: heareval computed its number from the embeddings folder{at}; "
                        "re-run heareval's predictions runner there and add it again with `asit bench --hear-scores`")
    if mode.startswith("s3prl"):
        raise AsitError(f"row {key} is an s3prl row: s3prl's run_downstream computed its number in the experiment "
                        f"folder{at}; re-run it with `asit s3prl` and add it again with `asit bench --s3prl-runs`")
    raise AsitError(f"row {key} has mode {mode!r}, which `asit reproduce` cannot run (it runs {', '.join(MODES)})")


# ------------------------------------------------------------------------------------------------- provenance

def row_cell(row: Mapping[str, Any]) -> TaskCell:
    """The cell a row was made from, rebuilt from its `config` (asdict of the TaskCell)."""
    config = row.get("config")
    if not isinstance(config, dict):
        raise AsitError(f"row {str(row.get('key'))[:12]} has no cell config to rebuild the run from")
    try:
        return from_dict(TaskCell, config, "config.")
    except (AsitError, TypeError, ValueError) as exc:
        raise AsitError(f"row {str(row.get('key'))[:12]}: its config does not rebuild a cell ({exc})") from None


def _recipe_name(cell: TaskCell) -> str:
    return str(cell.recipe) or f"{cell.task}_{cell.mode}"


def _commit_problem(stored: str, current: str) -> str | None:
    if not stored or stored == "unknown":
        return "commit: the row recorded no git commit (it was made outside a git checkout), so its code is unknown"
    if stored.endswith("-dirty"):
        base = stored[: -len("-dirty")]
        return (f"commit: the row was made from uncommitted changes on {base} ({stored}); that code was never "
                f"committed, so the row cannot be reproduced exactly (the nearest is `git checkout {base}`)")
    if current == "unknown":
        return f"commit: this copy of the project is not a git checkout, so it cannot be checked against {stored}"
    if current.endswith("-dirty"):
        return (f"commit: this tree has uncommitted changes ({current}); a dirty tree cannot reproduce a row "
                f"exactly: commit or stash them (`git stash`), or `git checkout {stored}` in a clean clone")
    if current != stored:
        return (f"commit: the row was made at {stored}, this tree is at {current}; `git checkout {stored}` and run "
                "`asit reproduce` again")
    return None


def _fingerprint_now(cell: TaskCell, recipe: Any) -> dict[str, Any]:
    from tasks.fingerprint import data_fingerprint
    from tasks.task_data import load_task_data

    data = load_task_data(cell.task, cell.data_root, fold=cell.fold, protocol=cell.protocol,
                          options=recipe.dataset)
    return data_fingerprint(data)


def _fingerprint_problem(row: Mapping[str, Any], cell: TaskCell, recipe: Any) -> str | None:
    extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
    stored = extra.get("data_fingerprint")
    if not isinstance(stored, dict) or not stored.get("digest"):
        return ("data fingerprint: the row was made before fingerprints were recorded (no extra.data_fingerprint), "
                f"so the data under {cell.data_root} cannot be checked against it")
    if recipe is None:
        return None              # the recipe no longer loads (reported above): its dataset options are unknown
    try:
        now = _fingerprint_now(cell, recipe)
    except AsitError as exc:
        return f"data fingerprint: the data under {cell.data_root} no longer reads ({exc})"
    if now.get("digest") == stored.get("digest"):
        return None
    details = []
    for name in ("clips", "files", "missing"):
        if name in stored and stored.get(name) != now.get(name):
            details.append(f"{name} {stored.get(name)} -> {now.get(name)}")
    why = f" ({'; '.join(details)})" if details else " (same counts: a clip, label or split changed)"
    return (f"data fingerprint: the data under {cell.data_root} changed since the row was made: digest "
            f"{stored.get('digest')} -> {now.get('digest')}{why}")


def check_provenance(row: Mapping[str, Any]) -> None:
    """Refuse (one AsitError listing every mismatch) unless the code commit, checkpoint identity, resolved recipe
    and data fingerprint are the row's. The commit comes from `benchmarks.results.git_commit`, looked up at call
    time so a test can substitute it."""
    from tasks.recipes import load_recipe, recipe_digest

    _refuse_foreign(row)
    key = str(row.get("key"))
    cell = row_cell(row)
    problems = []
    commit = _commit_problem(str(row.get("git_commit") or ""), results_module.git_commit())
    if commit:
        problems.append(commit)

    path = cell.encoder.path
    stored_identity = str(row.get("checkpoint_sha256") or "")
    if (not path and not cell.encoder.module) or (path and not Path(path).is_file()):
        problems.append(f"checkpoint: {path or '(no path)'} no longer exists")
    else:
        try:
            identity = spec_identity(cell.encoder)      # a HEAR module's: module + model file + options
        except AsitError as exc:
            problems.append(f"checkpoint: {path} cannot be read ({exc})")
        else:
            if identity != stored_identity:
                problems.append(f"checkpoint: the checkpoint changed since the row was made ({path}: identity "
                                f"{identity[:16]}, the row's {stored_identity[:16]})")

    recipe = None
    name = _recipe_name(cell)
    try:
        recipe = load_recipe(cell.task, cell.mode, cell.recipe, cell.overrides)
    except AsitError as exc:
        problems.append(f"recipe: {name} with the row's overrides no longer loads ({exc})")
    else:
        digest = recipe_digest(recipe)
        stored_digest = str(row.get("recipe_digest") or "")
        if stored_digest and digest != stored_digest:
            problems.append(f"recipe: {name} resolves differently now (digest {digest}, the row's {stored_digest}): "
                            "its file, a file it inherits or a default changed since the row was made")
        elif cell_key(cell, stored_identity, stored_digest) != key:
            problems.append(f"recipe: the row's config (recipe {name}) does not rebuild its key {key[:12]}; the row "
                            "was made by another version of the harness")

    data = _fingerprint_problem(row, cell, recipe)
    if data:
        problems.append(data)
    if problems:
        raise AsitError(f"cannot reproduce row {key[:12]} ({_label(row)}): " + "; ".join(problems))


# ------------------------------------------------------------------------------------------------- reproducing

@dataclass(frozen=True)
class Reproduction:
    """A stored row's value next to a fresh run's (metric units, e.g. accuracy in [0, 1])."""

    key: str
    label: str
    metric: str
    stored: float
    new: float
    difference: float                 # new − stored
    interval: Interval | None         # the stored row's 95 % clip-bootstrap interval
    interval_note: str                # why there is no interval ("" when there is one)
    verdict: str                      # IDENTICAL, WITHIN, OUTSIDE or NO_INTERVAL
    work_dir: Path
    summary: Path                     # <work_dir>/reproduction.json

    @property
    def reproduced(self) -> bool:
        """Identical, or inside the row's interval: the CLI's exit status 0."""
        return self.verdict in (IDENTICAL, WITHIN)


def default_work_dir(row: Mapping[str, Any], root: Path = DEFAULT_WORK_ROOT) -> Path:
    """runs/reproduce/<key[:12]>-<UTC time>: a new folder per reproduction."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(root) / f"{str(row['key'])[:12]}-{stamp}"


def stored_interval(row: Mapping[str, Any]) -> tuple[Interval | None, str]:
    """The row's 95 % bootstrap interval over its test clips, from its saved predictions; None and why not."""
    predictions, why = row_predictions(row)
    if predictions is None:
        return None, why
    interval = bootstrap_interval([float(row["value"])], predictions)
    if not math.isfinite(interval.low):
        return None, "the clip bootstrap gave no interval (the metric is undefined on resamples)"
    return interval, ""


def judge(stored: float, new: float, interval: Interval | None) -> str:
    """The verdict on a new value against the stored one and the stored row's interval."""
    if abs(new - stored) <= IDENTICAL_TOLERANCE:
        return IDENTICAL
    if interval is None:
        return NO_INTERVAL
    return WITHIN if interval.low <= new <= interval.high else OUTSIDE


def _fresh_folder(work_dir: Path) -> None:
    if work_dir.exists() and (not work_dir.is_dir() or any(work_dir.iterdir())):
        raise AsitError(f"work folder {work_dir} exists and is not empty: a reproduction runs in a fresh folder "
                        "(give another --work-dir, or leave it out for a new one under runs/reproduce/)")
    work_dir.mkdir(parents=True, exist_ok=True)


def reproduce(row: Mapping[str, Any], work_dir: Path, runner: Runner | None = None, *,
              fresh_cache: bool = True) -> Reproduction:
    """Check the row's provenance, re-run its cell in `work_dir` (new or empty) and compare. `fresh_cache`: probe
    cells compute their embeddings again in `<work_dir>/embeddings` instead of reading the shared cache (whose
    entries may be the very ones the row was made from). Nothing is written to a results store."""
    check_provenance(row)
    cell = row_cell(row)
    work_dir = Path(work_dir)
    _fresh_folder(work_dir)
    interval, note = stored_interval(row)
    run_cell = cell
    if fresh_cache and cell.mode == "probe":
        overrides = deep_merge(dict(cell.overrides), {"cache_dir": str((work_dir / "embeddings").resolve())})
        run_cell = dataclasses.replace(cell, overrides=overrides)
    runner = runner or resolve_runner(DEFAULT_RUNNER)
    started = time.monotonic()
    result = runner(run_cell, work_dir)
    seconds = time.monotonic() - started
    if result.metric != row.get("metric"):
        raise AsitError(f"row {str(row['key'])[:12]}: the re-run measured {result.metric}, the row {row.get('metric')}")
    stored, new = float(row["value"]), float(result.value)
    verdict = judge(stored, new, interval)
    extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
    fingerprint = extra.get("data_fingerprint") if isinstance(extra.get("data_fingerprint"), dict) else {}
    summary = work_dir / SUMMARY_FILE
    outcome = Reproduction(key=str(row["key"]), label=_label(row), metric=str(row.get("metric")), stored=stored,
                           new=new, difference=new - stored, interval=interval, interval_note=note, verdict=verdict,
                           work_dir=work_dir, summary=summary)
    record = {
        "key": outcome.key, "label": outcome.label, "metric": outcome.metric, "stored": stored, "new": new,
        "difference": outcome.difference, "verdict": verdict, "reproduced": outcome.reproduced,
        "interval": None if interval is None else {"low": interval.low, "high": interval.high,
                                                    "basis": interval.basis, "confidence": CONFIDENCE},
        "interval_note": note, "in_store": False,
        "note": "the new run is not written to any results store; the stored row stays the record",
        "git_commit": row.get("git_commit"), "checkpoint": cell.encoder.path,
        "checkpoint_sha256": row.get("checkpoint_sha256"), "recipe_digest": row.get("recipe_digest"),
        "data_fingerprint": fingerprint.get("digest"),
        "stored_duration_s": row.get("duration_s"), "duration_s": round(seconds, 3),
        "new_extra": results_module._jsonable(result.extra),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(summary, json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return outcome


def format_reproduction(outcome: Reproduction) -> str:
    """What `asit reproduce` prints: values in percent, difference in percentage points."""
    lines = [f"row {outcome.key[:12]}: {outcome.label}",
             f"  stored {outcome.metric}: {100 * outcome.stored:.4f} %",
             f"  new    {outcome.metric}: {100 * outcome.new:.4f} %",
             f"  difference: {100 * outcome.difference:+.4f} points"]
    if outcome.interval is not None:
        lines.append(f"  stored row's 95 % interval ({outcome.interval.basis} bootstrap): "
                     f"[{100 * outcome.interval.low:.2f}, {100 * outcome.interval.high:.2f}] %")
    else:
        lines.append(f"  stored row's 95 % interval: none ({outcome.interval_note})")
    lines.append(f"  verdict: {outcome.verdict}")
    lines.append(f"wrote {outcome.summary} (the new run is not added to any results store)")
    return "\n".join(lines)


__all__ = ["IDENTICAL", "NO_INTERVAL", "OUTSIDE", "Reproduction", "WITHIN", "check_provenance", "default_work_dir",
           "find_row", "format_reproduction", "judge", "reproduce", "row_cell", "stored_interval"]
