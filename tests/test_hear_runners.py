"""Reading heareval's results and keeping the demo's HEAR stage from reusing stale results (no subprocesses)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from asit_hear.demo_stage import forget_stale_results
from asit_hear.runners import read_scores, run_command
from upstream.errors import AsitError


def _task(folder: Path, evaluation: list[str], scores: dict) -> Path:  # type: ignore[type-arg]
    folder.mkdir(parents=True)
    (folder / "task_metadata.json").write_text(json.dumps({"task_name": folder.name, "evaluation": evaluation}))
    # heareval writes json.dumps(...) of Python floats: NaN appears as a bare NaN token
    (folder / "test.predicted-scores.json").write_text(json.dumps(scores, indent=4))
    return folder


def test_read_scores_of_a_kfold_task_uses_heareval_fold_means(tmp_path) -> None:
    folds = {f"fold0{k}": {"test_score": 0.1 * k, "test_top1_acc": 0.1 * k, "test_d_prime": float("nan")}
             for k in range(3)}
    agg = {"test_top1_acc_mean": 0.1, "test_d_prime_mean": float("nan")}
    task = _task(tmp_path / "esc50", ["top1_acc", "d_prime"], {**folds, "aggregated_scores": agg, "hparams": {}})
    assert "NaN" in (task / "test.predicted-scores.json").read_text()
    scores = read_scores(task)
    assert scores["primary"] == "top1_acc" and scores["score"] == pytest.approx(0.1)
    assert scores["scores"] == {"top1_acc": pytest.approx(0.1), "d_prime": None}
    assert scores["folds"] == {"fold00": 0.0, "fold01": pytest.approx(0.1), "fold02": pytest.approx(0.2)}


def test_read_scores_of_a_train_valid_test_task(tmp_path) -> None:
    task = _task(tmp_path / "sc", ["top1_acc"], {"test": {"test_score": 0.75, "test_top1_acc": 0.75},
                                                 "score_mode": "max"})
    assert read_scores(task)["score"] == 0.75 and read_scores(task)["folds"] == {"test": 0.75}
    with pytest.raises(AsitError, match="has not finished"):
        read_scores(tmp_path)


def test_a_failing_command_reports_its_log(tmp_path) -> None:
    log = tmp_path / "x.log"
    with pytest.raises(AsitError, match=r"exit 3.*x\.log.*boom"):
        run_command([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path, log)
    run_command([sys.executable, "-c", "import os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"], tmp_path, log)
    assert log.read_text().splitlines()[-1] == "3"


def test_stale_heareval_results_are_dropped_when_encoder_or_task_changes(tmp_path) -> None:
    work, encoder, task = tmp_path / "hear", tmp_path / "enc.pt", tmp_path / "hear" / "tasks" / "esc50"
    task.mkdir(parents=True)
    encoder.write_bytes(b"weights 1")
    (task / "task_metadata.json").write_text('{"source_clips": 50}')
    assert forget_stale_results(work, encoder, [task]) is False
    done = work / "embeddings" / "asit_hear" / "esc50" / ".done.embeddings"
    done.parent.mkdir(parents=True)
    done.touch()
    assert forget_stale_results(work, encoder, [task]) is False and done.is_file()      # unchanged: kept
    encoder.write_bytes(b"weights 2")
    assert forget_stale_results(work, encoder, [task]) is True and not done.exists()    # new encoder: dropped
    done.parent.mkdir(parents=True)
    done.touch()
    (task / "task_metadata.json").write_text('{"source_clips": 49}')
    assert forget_stale_results(work, encoder, [task]) is True and not done.exists()    # new data: dropped
