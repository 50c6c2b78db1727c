"""`run_task(cell, work_dir)`: one suite cell — an encoder on a task, finetuned or probed — to one `TaskResult`.

The cell's recipe (`cell.recipe`, default `<task>_<mode>`) plus `cell.overrides` decides everything; the dataset is
read from `cell.data_root` in its own layout under the task's protocol (AS-20K balanced_train → eval; ESC-50 train on
four folds, test on `cell.fold`; Speech Commands official lists / SUPERB's V1 test set; VoxCeleb1 iden_split).
"""

from __future__ import annotations

import json
from pathlib import Path

from upstream.atomic import atomic_write_text
from upstream.errors import AsitError
from upstream.workers import worker_errors

from .api import MODES, TASKS, TaskCell, TaskResult
from .compute import measure_compute
from .fingerprint import data_fingerprint
from .recipes import FinetuneRecipe, ProbeRecipe, load_recipe
from .task_data import PROTOCOLS, load_task_data


def run_task(cell: TaskCell, work_dir: Path) -> TaskResult:
    """Run one cell; results, predictions and the resolved recipe are written into `work_dir`. The result records
    the data's fingerprint (tasks.fingerprint) and the cell's compute (tasks.compute) for the audit fields of rows."""
    if cell.task not in TASKS:
        raise AsitError(f"unknown task {cell.task!r}; choose from {', '.join(TASKS)}")
    if cell.mode not in MODES:
        raise AsitError(f"unknown mode {cell.mode!r}; choose from {', '.join(MODES)}")
    if cell.encoder.module and cell.mode != "probe":
        raise AsitError(f"encoder {cell.encoder.name} is the HEAR module {cell.encoder.module}: {cell.mode} is not "
                        "supported for a foreign module (it is evaluated frozen, by probe cells or heareval); run "
                        "it in mode probe")
    recipe = load_recipe(cell.task, cell.mode, cell.recipe, cell.overrides)
    data = load_task_data(cell.task, cell.data_root, fold=cell.fold, protocol=cell.protocol,
                          options=recipe.dataset)
    fingerprint = data_fingerprint(data)       # before the run: what it saw, even if files change meanwhile
    # an unreadable clip met in a DataLoader worker: the reader's one-line error
    with worker_errors(), measure_compute() as meter:
        if isinstance(recipe, FinetuneRecipe):
            from .finetune import run_finetune   # imports Lightning only when finetuning
            result = run_finetune(data, cell.encoder, recipe, cell.seed, Path(work_dir))
        else:
            assert isinstance(recipe, ProbeRecipe)
            from .probe import run_probe
            result = run_probe(data, cell.encoder, recipe, cell.seed, Path(work_dir))
    result.extra.update(protocol=data.protocol, fold=cell.fold, seed=cell.seed,
                        recipe=str(cell.recipe) or f"{cell.task}_{cell.mode}", data_fingerprint=fingerprint,
                        compute=meter.summary(result.extra))
    write_result(Path(work_dir) / "result.json", result)
    return result


def write_result(path: Path, result: TaskResult) -> None:
    """result.json (metric, value, extra), replaced atomically: every DDP rank writes the same content."""
    atomic_write_text(path, json.dumps({"metric": result.metric, "value": result.value, "extra": result.extra},
                                       indent=2, default=str) + "\n")


__all__ = ["PROTOCOLS", "run_task"]
