"""Run heareval's own runners and hearvalidator as the user would (the literal commands, as subprocesses) and
read their results. Used by the demo's HEAR stage and the end-to-end tests; nothing here re-implements them.

    python -m heareval.embeddings.runner asit_hear --model ENCODER --tasks-dir TASKS   (cwd: work dir)
    python -m heareval.predictions.runner embeddings/asit_hear/<task> ... [--grid G --grid-points N]
    hear-validator asit_hear --model ENCODER

`module` (default asit_hear) names any other installed HEAR 2021 module instead (someone else's model, as an
`EncoderSpec.module`), with its model file or none (`encoder=None`: heareval then calls `load_model()` without one).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from upstream.errors import AsitError

MODULE = "asit_hear"
# TensorFlow (imported at top level by the embeddings runner and hear-validator) is otherwise chatty.
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}


def hear_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(QUIET_TF)
    env.update(extra or {})
    return env


def _tail(path: Path, lines: int = 3) -> str:
    text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(line.strip()[:200] for line in text[-lines:])


def run_command(command: Sequence[str], cwd: Path, log_file: Path, env: dict[str, str] | None = None) -> None:
    """Run one command in `cwd` (with `env` added to the environment), output to `log_file`; AsitError with the
    log's last lines if it fails."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        done = subprocess.run(list(command), cwd=cwd, env=hear_env(env), stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise AsitError(f"`{' '.join(command)}` failed (exit {done.returncode}), see {log_file}: {_tail(log_file)}")


def _model_arguments(encoder: Path | None) -> list[str]:
    return [] if encoder is None else ["--model", str(encoder)]


def embeddings_command(encoder: Path | None, tasks_dir: Path, task: str | None = None,
                       model_options: dict[str, Any] | None = None, module: str = MODULE) -> list[str]:
    command = [sys.executable, "-m", "heareval.embeddings.runner", module, *_model_arguments(encoder),
               "--tasks-dir", str(tasks_dir)]
    if task:
        command += ["--task", task]
    if model_options:
        command += ["--model-options", json.dumps(model_options)]
    return command


def predictions_command(task_dirs: Sequence[Path], grid: str = "default", grid_points: int = 8) -> list[str]:
    return [sys.executable, "-m", "heareval.predictions.runner", *map(str, task_dirs), "--grid", grid,
            "--grid-points", str(grid_points)]


def validator_command(encoder: Path | None, module: str = MODULE) -> list[str]:
    script = shutil.which("hear-validator", path=str(Path(sys.executable).parent)) or "hear-validator"
    return [script, module, *_model_arguments(encoder)]


def _absolute(encoder: Path | None) -> Path | None:
    return None if encoder is None else Path(encoder).absolute()


def compute_embeddings(encoder: Path | None, tasks_dir: Path, work_dir: Path, log_file: Path,
                       env: dict[str, str] | None = None, module: str = MODULE) -> Path:
    """heareval's embeddings runner with `module` (default asit_hear) on every task of `tasks_dir`, from
    `work_dir`; returns `work_dir/embeddings/<module>` (heareval skips tasks already marked done)."""
    run_command(embeddings_command(_absolute(encoder), Path(tasks_dir).absolute(), module=module), work_dir,
                log_file, env)
    return work_dir / "embeddings" / module


def predict(task_dirs: Sequence[Path], work_dir: Path, log_file: Path, grid: str = "default",
            grid_points: int = 8, env: dict[str, str] | None = None) -> None:
    """heareval's predictions runner (writes `logs/` under `work_dir`, its cwd)."""
    relative = [Path(os.path.relpath(Path(t).absolute(), work_dir.absolute())) for t in task_dirs]
    run_command(predictions_command(relative, grid, grid_points), work_dir, log_file, env)


def validate(encoder: Path | None, work_dir: Path, log_file: Path, env: dict[str, str] | None = None,
             module: str = MODULE) -> None:
    """hear-validator on the module + encoder; AsitError unless it ends with its success line."""
    run_command(validator_command(_absolute(encoder), module), work_dir, log_file, env)
    if "Looks good!" not in log_file.read_text(errors="replace"):
        raise AsitError(f"hear-validator did not report success, see {log_file}: {_tail(log_file)}")


def read_scores(task_dir: Path) -> dict[str, Any]:
    """The test scores of one predicted task: {metric: value} (fold means for k-fold tasks), its primary metric,
    and per-fold values. NaN (e.g. d_prime on a fold missing a class) becomes None."""
    path = Path(task_dir) / "test.predicted-scores.json"
    if not path.is_file():
        raise AsitError(f"{path} does not exist: heareval's predictions runner has not finished this task")
    data = json.loads(path.read_text())
    metadata = json.loads((Path(task_dir) / "task_metadata.json").read_text())
    metrics = list(metadata["evaluation"])

    def clean(value: Any) -> float | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    folds = {k: v for k, v in data.items() if isinstance(v, dict) and "test_score" in v}
    if "aggregated_scores" in data:
        agg = data["aggregated_scores"]
        scores = {m: clean(agg.get(f"test_{m}_mean")) for m in metrics}
    else:
        only = next(iter(folds.values()))
        scores = {m: clean(only.get(f"test_{m}")) for m in metrics}
    return {
        "task": metadata["task_name"],
        "primary": metrics[0],
        "score": scores[metrics[0]],
        "scores": scores,
        "folds": {k: clean(v.get(f"test_{metrics[0]}")) for k, v in folds.items()},
        "hparams": data.get("hparams", {}),
    }
