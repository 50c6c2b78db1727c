"""The demo's HEAR stage: corpus -> HEAR task folders -> heareval's own runners on the demo encoder -> scores.

Everything lives in `<demo out>/hear/`: tasks/, embeddings/asit_hear/<task>/ (heareval's outputs, with
test.predicted-scores.json), logs/ (heareval's Lightning logs), *.log (each command's output). heareval skips
tasks it already finished; if the encoder or a task changed since (their SHA-256 are kept in inputs.sha256),
embeddings and predictions are redone.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from upstream.hashing import file_sha256

from .runners import MODULE, compute_embeddings, predict, read_scores, validate

# heareval's fastest grid: the demo's numbers show the pipeline works, not the encoder's best (docs/hear.md)
DEMO_GRID = "faster"
DEMO_GRID_POINTS = 4
DEMO_DATASETS = ("esc50", "speechcommands_v2", "speechcommands_v1", "voxceleb1", "audioset")
# The demo is a CPU run. heareval's embeddings runner refuses to start when torch sees a GPU that TensorFlow does not
# (always the case with the tensorflow-cpu of the documented set-up), so its subprocesses get no GPU.
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def forget_stale_results(work: Path, encoder: Path, task_folders: Sequence[Path]) -> bool:
    """heareval reuses any task it marked done, whatever encoder or data made it: drop its embeddings and
    Lightning logs when the encoder file or a task's metadata changed since the last run. True if dropped."""
    stamp = work / "inputs.sha256"
    lines = [f"encoder {file_sha256(encoder)}"] + [f"{t.name} {file_sha256(t / 'task_metadata.json')}"
                                                for t in sorted(task_folders)]
    current = "\n".join(lines) + "\n"
    stale = stamp.is_file() and stamp.read_text() != current
    if stale:
        shutil.rmtree(work / "embeddings", ignore_errors=True)
        shutil.rmtree(work / "logs", ignore_errors=True)
        (work / "validator.log").unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current)
    return stale


def stage_hear(ctx: Any, datasets: Sequence[str] = DEMO_DATASETS, grid: str = DEMO_GRID,
               grid_points: int = DEMO_GRID_POINTS) -> None:
    """Build HEAR tasks from ctx.corpus, run heareval's runners and hear-validator on ctx.encoder, and put the
    test scores into ctx.report["hear"]."""
    from tasks.hear_tasks import build_tasks

    started = time.time()
    work = Path(ctx.out_dir) / "hear"
    roots = {key: getattr(ctx.corpus, key) for key in datasets if getattr(ctx.corpus, key, None) is not None}
    built = build_tasks(roots, work / "tasks", speechcommands_v1_test=ctx.corpus.speechcommands_v1_test,
                        log=lambda msg: ctx.log(f"  hear-tasks: {msg}"))
    if forget_stale_results(work, Path(ctx.encoder), list(built.values())):
        ctx.log("encoder or tasks changed since the last run: heareval's earlier results dropped")
    task_dirs = [work / "embeddings" / MODULE / folder.name for folder in built.values()]
    validator_log = work / "validator.log"
    if all((t / "test.predicted-scores.json").is_file() for t in task_dirs) and validator_log.is_file() \
            and "Looks good!" in validator_log.read_text(errors="replace"):
        ctx.log(f"heareval results for this encoder and these tasks already in {work}")
    else:
        ctx.log(f"heareval embeddings runner on {len(built)} tasks (log: {work / 'embeddings.log'})")
        compute_embeddings(Path(ctx.encoder), work / "tasks", work, work / "embeddings.log", CPU_ONLY)
        ctx.log(f"heareval predictions runner, grid {grid} x {grid_points} (log: {work / 'predictions.log'})")
        predict(task_dirs, work, work / "predictions.log", grid=grid, grid_points=grid_points, env=CPU_ONLY)
        validate(Path(ctx.encoder), work, validator_log, CPU_ONLY)
        ctx.log("hear-validator: Looks good!")
    results = {}
    for task_dir in task_dirs:
        scores = read_scores(task_dir)
        results[scores["task"]] = {"metric": scores["primary"], "score": scores["score"], "scores": scores["scores"],
                                   "folds": scores["folds"]}
        score = "n/a" if scores["score"] is None else f"{scores['score']:.3f}"
        ctx.log(f"  HEAR {scores['task']:>20}: test {scores['primary']} {score}"
                + (f" (mean of {len(scores['folds'])} folds)" if len(scores["folds"]) > 1 else ""))
    ctx.report["hear"] = {"module": MODULE, "encoder": str(ctx.encoder), "grid": grid,
                          "grid_points": grid_points, "validator": "passed", "tasks": results,
                          "seconds": round(time.time() - started, 1)}
    conformer = getattr(ctx, "conformer", None)
    if conformer is not None:
        log = work / "validator-conformer.log"
        if not (log.is_file() and "Looks good!" in log.read_text(errors="replace")):
            validate(Path(conformer), work, log, CPU_ONLY)
        ctx.report["hear"]["validator_conformer"] = "passed"
        ctx.log("hear-validator on the conformer encoder: Looks good!")
