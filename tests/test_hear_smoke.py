"""HEAR rows scored with heareval's reduced grids are smoke tests: recognised from the selected hyperparameters,
labelled in the table, listed last and left out of paired comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from heareval.predictions import task_predictions as heareval
from sklearn.model_selection import ParameterGrid

from benchmarks.hear_results import heareval_grid, hear_rows
from benchmarks.results import ResultsStore
from benchmarks.table import MODE_LABELS, SMOKE_MODE, compare, load_results, write_leaderboard
from tasks.api import EncoderSpec
from upstream.errors import AsitError

GRIDS = {"default": heareval.PARAM_GRID, "fast": heareval.FAST_PARAM_GRID, "faster": heareval.FASTER_PARAM_GRID}


def _as_heareval_writes(point: dict) -> dict:  # type: ignore[type-arg]
    """A grid point as heareval stores it in test.predicted-scores.json: through its own hparams_to_json and a
    JSON round trip (functions and classes become their str, with an address)."""
    return json.loads(json.dumps(heareval.hparams_to_json(point)))


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_every_point_of_each_heareval_grid_is_recognised_as_that_grid(name: str) -> None:
    points = list(ParameterGrid(GRIDS[name]))
    assert {heareval_grid(_as_heareval_writes(p)) for p in points} == {name}


def test_hparams_outside_heareval_grids_are_unknown() -> None:
    point = _as_heareval_writes(next(iter(ParameterGrid(heareval.PARAM_GRID))))
    assert heareval_grid({}) == heareval_grid(None) == "unknown"
    assert heareval_grid({**point, "hidden_dim": 333}) == "unknown"
    assert heareval_grid({k: v for k, v in point.items() if k != "lr"}) == "unknown"


def _scored_task(folder: Path, grid: str, accuracies: list[float]) -> Path:
    """A heareval task folder after its predictions runner: 5 folds, the best point of `grid` in hparams."""
    folder.mkdir(parents=True)
    (folder / "task_metadata.json").write_text(json.dumps(
        {"task_name": "esc50", "split_mode": "presplit_kfold", "splits": [f"fold{i:02d}" for i in range(5)],
         "evaluation": ["top1_acc"]}))
    point = _as_heareval_writes(next(iter(ParameterGrid(GRIDS[grid]))))
    scores = {f"fold{i:02d}": {"test_top1_acc": a, "test_score": a, "validation_score": a, "epoch": 0,
                               "time_in_min": 0.01} for i, a in enumerate(accuracies)}
    (folder / "test.predicted-scores.json").write_text(json.dumps({**scores, "hparams": point, "score_mode": "max"}))
    return folder


def _store(tmp_path: Path) -> Path:
    store = ResultsStore(tmp_path / "results.jsonl")
    runs = {"pretrained": ("faster", [0.3, 0.2, 0.4, 0.3, 0.3]), "scratch": ("faster", [0.2, 0.2, 0.3, 0.2, 0.4]),
            "benchmarked": ("default", [0.6, 0.7, 0.6, 0.8, 0.7])}
    for name, (grid, accuracies) in runs.items():
        task = _scored_task(tmp_path / name / "embeddings" / name / "esc50", grid, accuracies)
        checkpoint = tmp_path / f"{name}.pt"
        checkpoint.write_bytes(name.encode())
        assert store.append_all(hear_rows(task, EncoderSpec(name, str(checkpoint))))[0] == 5   # each fold is tested once
    return store.path


def test_smoke_rows_are_marked_at_ingestion_and_keyed_apart(tmp_path: Path) -> None:
    rows = ResultsStore(_store(tmp_path)).rows()
    by_encoder = {r["encoder"]: r for r in rows}
    assert by_encoder["pretrained"]["extra"]["heareval_grid"] == "faster"
    assert by_encoder["pretrained"]["extra"]["smoke_test"] is True
    assert by_encoder["benchmarked"]["extra"]["smoke_test"] is False
    assert by_encoder["pretrained"]["config"]["overrides"]["grid"] == "faster"   # a setting: in the cell key


def test_the_table_labels_smoke_tests_lists_them_last_and_says_why(tmp_path: Path) -> None:
    files = write_leaderboard([_store(tmp_path)], tmp_path / "board", reference=False)
    body = files.markdown.read_text()
    smoke_label = MODE_LABELS[SMOKE_MODE]
    table_lines = [line for line in body.splitlines() if line.startswith("| ")][1:]
    modes = [("smoke" in line, line.split("|")[1].strip()) for line in table_lines]
    assert modes == [(False, "benchmarked"), (True, "pretrained"), (True, "scratch")]
    assert f"`{smoke_label}`" in body and "not a measurement" in body


def test_compare_leaves_smoke_tests_out_and_says_so(tmp_path: Path) -> None:
    rows = load_results([_store(tmp_path)])
    with pytest.raises(AsitError, match="share no task.*smoke test"):
        compare(rows, "pretrained", "scratch")
    with pytest.raises(AsitError, match="share no task.*smoke test"):
        compare(rows, "benchmarked", "pretrained")


def test_rows_stored_before_the_mark_are_judged_by_their_hparams(tmp_path: Path) -> None:
    path = _store(tmp_path)
    old = [dict(r, extra={k: v for k, v in r["extra"].items() if k not in ("smoke_test", "heareval_grid")})
           for r in ResultsStore(path).rows()]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    body = write_leaderboard([path], tmp_path / "board", reference=False).markdown.read_text()
    assert [("smoke" in line) for line in body.splitlines() if line.startswith("| ")][1:] == [False, True, True]
