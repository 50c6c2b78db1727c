"""HEAR results into the store: what heareval's predictions runner wrote, as protocol-tagged rows (mode "hear").

`python -m heareval.predictions.runner <embeddings>/<module>/<task>` writes, per task folder,
`test.predicted-scores.json` (heareval/predictions/task_predictions.py, `task_predictions`): one entry per test
split — "test" for train/valid/test tasks, "fold00".."foldNN" for k-fold tasks — holding the logged `test_<score>`
values (the first score in task_metadata.json's "evaluation" is also logged as `test_score`), plus
"validation_score", "epoch" and "time_in_min"; then "aggregated_scores" (k-fold only), "hparams", "postprocessing",
"score_mode" and "embedding_path". k-fold tasks test each fold with the next one as validation and the rest as
training (`data_splits_from_folds`), hence protocols such as `hear/esc50-v2.0.0-full/5fold-3/1/1`.
We ingest one row per test split, with heareval's own number: nothing is recomputed. The embedding module folder
(`<module>` or `<module>-<options>`), heareval's grid size and determinism are the row's settings: runs differing in
them are kept apart in the store and in the table.

heareval does not write down which of its grids (`--grid default|fast|faster`) a run used, so the grid is read off
the selected hyperparameters (`hparams`), which lie in exactly one of its grids (`heareval_grid`). Only the default
grid is the HEAR benchmark's protocol: `fast` and `faster` stop after 10–50 epochs (`faster`: 64–128-unit MLPs,
patience 1–3), so on small sets the selected model is often epoch 0. Their rows are smoke tests (`extra.smoke_test`):
the table labels them so and `--compare` leaves them out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from tasks.api import EncoderSpec, TaskCell, TaskResult
from tasks.hear_export import TASK_OF_DATASET
from upstream.errors import AsitError

from .results import ResultsStore, cell_key, make_row, settings_digest, spec_identity

SCORES_FILE = "test.predicted-scores.json"
METADATA_FILE = "task_metadata.json"
DONE_FILE = "prediction-done.json"
NOT_SPLITS = {"aggregated_scores", "hparams", "postprocessing", "score_mode", "embedding_path"}
# heareval seeds everything with 42 when --deterministic (its default) is on
HEAREVAL_SEED = 42
METRICS = {"top1_acc": "accuracy", "mAP": "mAP"}
BENCHMARK_GRID = "default"            # the grid of the HEAR 2021 protocol; the others are smoke tests
UNKNOWN_GRID = "unknown"


def heareval_grid(hparams: Any) -> str:
    """Which of heareval's grids holds the selected `hparams` (as heareval writes them: non-numbers as `str`), or
    "unknown" (no hparams, a grid of another heareval version, a task-specific grid)."""
    if not isinstance(hparams, dict) or not hparams:
        return UNKNOWN_GRID
    from heareval.predictions import task_predictions as heareval      # imported only to ingest HEAR rows

    grids = {"default": heareval.PARAM_GRID, "fast": heareval.FAST_PARAM_GRID, "faster": heareval.FASTER_PARAM_GRID}
    matching = [name for name, grid in grids.items()
                if all(key in hparams and _heareval_text(hparams[key]) in map(_heareval_text, values)
                       for key, values in grid.items() if key not in _TASK_SPECIFIC)]
    return matching[0] if len(matching) == 1 else UNKNOWN_GRID


# heareval overrides these per task (TASK_SPECIFIC_PARAM_GRID, a task's own evaluation_params), so they do not tell
# the grid apart; a function's repr (initialization) carries its address, so it is compared by name
_TASK_SPECIFIC = ("check_val_every_n_epoch",)


def _heareval_text(value: Any) -> str:
    """A grid value as heareval writes it into hparams (`str` of non-numbers), a function by its name only."""
    if isinstance(value, (bool, int, float)):
        return repr(value)
    text = str(value)
    function = re.fullmatch(r"<function (\S+) at 0x[0-9a-f]+>", text)
    return f"<function {function.group(1)}>" if function else text


def find_task_dirs(path: str | Path) -> list[Path]:
    """`path` itself if it is a scored task folder, else every scored task folder below it."""
    path = Path(path)
    if not path.is_dir():
        raise AsitError(f"HEAR embeddings folder {path} does not exist")
    if (path / SCORES_FILE).is_file():
        return [path]
    found = sorted(p.parent for p in path.rglob(SCORES_FILE))
    if not found:
        raise AsitError(f"no {SCORES_FILE} under {path}: run heareval's predictions runner on its task folders "
                        "first (python -m heareval.predictions.runner <embeddings>/<module>/*)")
    return found


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AsitError(f"{path} is missing (is {path.parent} a heareval task folder?)") from None
    except ValueError as exc:
        raise AsitError(f"{path} is not valid JSON ({exc})") from None


def protocol_of(task_dir: Path, metadata: dict[str, Any]) -> str:
    """`hear/<task folder>/<split scheme>`: the folder name carries HEAR's task version and size (e.g. -5h)."""
    mode = metadata.get("split_mode")
    if mode == "trainvaltest":
        scheme = "train-valid-test"
    elif mode in ("new_split_kfold", "presplit_kfold"):
        k = len(metadata.get("splits", []))
        scheme = f"{k}fold-{k - 2}/1/1"
    else:
        raise AsitError(f"{task_dir / METADATA_FILE}: unknown split_mode {mode!r}")
    return f"hear/{task_dir.name}/{scheme}"


def hear_cells(task_dir: Path, encoder: EncoderSpec) -> list[tuple[TaskCell, TaskResult, float]]:
    """(cell, result, seconds) per test split of one scored task folder."""
    metadata = _load_json(task_dir / METADATA_FILE)
    scores = _load_json(task_dir / SCORES_FILE)
    done = _load_json(task_dir / DONE_FILE) if (task_dir / DONE_FILE).is_file() else {}
    if not isinstance(metadata, dict) or not isinstance(scores, dict) or not metadata.get("evaluation"):
        raise AsitError(f"{task_dir}: {METADATA_FILE} / {SCORES_FILE} are not heareval's format")
    primary = metadata["evaluation"][0]
    task_name = str(metadata.get("task_name", task_dir.name))
    protocol = protocol_of(task_dir, metadata)
    deterministic = bool(done.get("deterministic", True))
    grid = heareval_grid(scores.get("hparams"))
    out = []
    for split, values in scores.items():
        if split in NOT_SPLITS:
            continue
        if not isinstance(values, dict):
            raise AsitError(f"{task_dir / SCORES_FILE}: entry {split!r} is not a mapping of scores")
        value = values.get(f"test_{primary}", values.get("test_score"))
        if value is None:
            raise AsitError(f"{task_dir / SCORES_FILE}: split {split!r} has no test_{primary} nor test_score")
        digits = re.fullmatch(r"fold(\d+)", split)
        cell = TaskCell(encoder=encoder, task=TASK_OF_DATASET.get(task_name, task_name), mode="hear",
                        protocol=protocol,
                        seed=HEAREVAL_SEED if deterministic else 0, fold=int(digits.group(1)) if digits else None,
                        data_root=str(task_dir), recipe="heareval.predictions",
                        overrides={"grid_points": done.get("grid_points"), "deterministic": deterministic,
                                   "module": task_dir.parent.name, "grid": grid})
        extra = {k: v for k, v in values.items() if k.startswith("test_") or k in ("validation_score", "epoch")}
        extra.update({"hear_task": task_name, "hear_split": split, "hparams": scores.get("hparams", {}),
                      "score_mode": scores.get("score_mode"), "heareval_grid": grid,
                      "smoke_test": grid != BENCHMARK_GRID})
        out.append((cell, TaskResult(METRICS.get(primary, primary), float(value), extra),
                    60.0 * float(values.get("time_in_min") or 0.0)))
    if not out:
        raise AsitError(f"{task_dir / SCORES_FILE} holds no test split")
    return out


def hear_rows(path: str | Path, encoder: EncoderSpec, *, pretraining: str = "") -> Iterator[dict[str, Any]]:
    """Store rows of every scored task folder under `path` (one per test split), task folder by task folder.
    `encoder` is the checkpoint (or HEAR module) whose embeddings heareval scored (its identity, `spec_identity`:
    weights + config, or module + model file + options, goes into each row as `checkpoint_sha256`), so a module's
    HEAR rows and its probe rows are one encoder in the table."""
    sha = spec_identity(encoder)
    for task_dir in find_task_dirs(path):
        for cell, result, seconds in hear_cells(task_dir, encoder):
            digest = settings_digest(cell.overrides)
            yield make_row(cell, cell_key(cell, sha, digest), sha, result=result, duration_s=seconds,
                           suite="heareval", pretraining=pretraining, recipe_digest=digest)


def ingest_hear_scores(path: str | Path, encoder: EncoderSpec, store: ResultsStore, *,
                       pretraining: str = "") -> tuple[int, int]:
    """Add `hear_rows` to `store`. Returns (rows added, rows already present)."""
    return store.append_all(hear_rows(path, encoder, pretraining=pretraining))


__all__ = ["BENCHMARK_GRID", "UNKNOWN_GRID", "find_task_dirs", "hear_cells", "heareval_grid", "hear_rows",
           "ingest_hear_scores", "protocol_of"]
