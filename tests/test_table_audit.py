"""The leaderboard's audit fields: which finetune epoch a cell shows (`--epoch best|last`), the data fingerprint each
column's rows saw (flagged when they differ) and the Cost column summed from the rows' compute records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks.results import ResultsStore, cell_key, make_row
from benchmarks.suite import TASK_PROTOCOLS
from benchmarks.table import (FLAG, data_mismatches, load_results, long_table, select_epoch, to_latex, wide_table,
                              write_leaderboard)
from tasks.api import EncoderSpec, TaskCell, TaskResult
from upstream.cli import main as cli_main

SID = "SID acc [voxceleb1/iden-split]"
ESC = "ESC-50 acc [esc50/train4-test1]"


def fingerprint(digest: str, clips: int = 40, missing: int = 0) -> dict[str, Any]:
    return {"digest": digest, "clips": {"train": clips - 10, "test": 10}, "files": clips, "missing": missing}


def compute(wall_s: float, forwards: int | None = 1000) -> dict[str, Any]:
    return {"wall_s": wall_s, "device": "cpu", "device_type": "cpu", "precision": "32-true",
            "peak_memory_mb": 512.0, "encoder_forwards": forwards, "encoder_forward_calls": None}


def add(store: ResultsStore, encoder: str, task: str, mode: str, seed: int, value: float, fold: int | None = None,
        **extra: Any) -> None:
    cell = TaskCell(EncoderSpec(encoder, f"/{encoder}.pt"), task, mode, TASK_PROTOCOLS[task][0], seed, fold)
    sha = encoder[0] * 64
    store.append(make_row(cell, cell_key(cell, sha), sha, checkpoint_file_sha256="",
                          result=TaskResult("accuracy", value, dict(extra))))


def epochs(best: float, last: float) -> dict[str, Any]:
    return {"reported_epoch": "best", "epoch_scores": {"best": {"epoch": 3, "value": best},
                                                       "last": {"epoch": 5, "value": last}}}


def test_epoch_last_shows_the_last_epochs_score_and_best_is_the_default(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    for seed, (best, last) in enumerate([(0.80, 0.60), (0.70, 0.50)], start=1):
        add(store, "asit", "voxceleb1", "finetune", seed, best, **epochs(best, last))
    add(store, "old", "voxceleb1", "finetune", 1, 0.30)                    # stored before both were kept
    add(store, "asit", "voxceleb1", "probe", 1, 0.40)                      # probes have no epochs
    rows = load_results([store.path])

    for epoch, expected in (("best", 75.0), ("last", 55.0)):
        long = long_table(select_epoch(rows, epoch)).set_index(["model", "mode"])
        assert long.loc[("asit", "finetune"), "mean"] == pytest.approx(expected)
        assert long.loc[("asit", "finetune"), "epoch"] == epoch
        assert long.loc[("old", "finetune"), "mean"] == pytest.approx(30.0)     # unchanged, and says nothing
        assert long.loc[("old", "finetune"), "epoch"] == ""
        assert long.loc[("asit", "probe"), "mean"] == pytest.approx(40.0)

    files = write_leaderboard([store.path], tmp_path / "last", reference=False, epoch="last", resamples=50)
    assert "55.0 ± 7.1" in files.text and "75.0" not in files.text
    assert "test score at the last epoch (`asit table --epoch last`" in files.audit and f"last in {SID}" in files.audit


def test_a_recipe_without_validation_shows_its_last_epoch_under_best(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    add(store, "asit", "voxceleb1", "finetune", 1, 0.5, reported_epoch="last",
        epoch_scores={"last": {"epoch": 2, "value": 0.5}})
    long = long_table(select_epoch(load_results([store.path]), "best"))
    assert long["epoch"].tolist() == ["last"] and long["mean"].tolist() == [pytest.approx(50.0)]


def test_a_column_whose_rows_saw_different_data_is_flagged_and_the_legend_names_who_saw_what(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    add(store, "asit", "voxceleb1", "probe", 1, 0.5, data_fingerprint=fingerprint("d1"))
    add(store, "scratch", "voxceleb1", "probe", 1, 0.4, data_fingerprint=fingerprint("d2", missing=3))
    for fold in (1, 2):                                  # agreeing column: no flag, its digest and clips listed
        add(store, "asit", "esc50", "probe", 1, 0.6, fold=fold, data_fingerprint=fingerprint("e1", 50))
        add(store, "scratch", "esc50", "probe", 1, 0.3, fold=fold, data_fingerprint=fingerprint("e1", 50))
    add(store, "fresh", "esc50", "probe", 1, 0.2, fold=1)   # no fingerprint: not a mismatch, but counted

    long = long_table(load_results([store.path]))
    assert data_mismatches(long) == {SID: {"d1": ["asit (probe (frozen))"], "d2": ["scratch (probe (frozen))"]}}
    wide = wide_table(long)
    assert FLAG + SID in wide.columns and ESC in wide.columns and FLAG + ESC not in wide.columns
    assert r"$\dagger$" in to_latex(long)

    files = write_leaderboard([store.path], tmp_path / "out", reference=False, resamples=50)
    assert (f"- {FLAG}{SID}: DIFFERENT DATA — d1 by asit (probe (frozen)); d2 by scratch (probe (frozen)); these rows "
            "are not comparable") in files.audit
    assert f"- {ESC}: e1, 50 clips, 0 listed clip(s) missing or unreadable; 1 run(s) recorded no fingerprint" \
        in files.audit
    assert files.audit in files.markdown.read_text()
    long_csv = pd.read_csv(files.long_csv).set_index(["model", "task"])
    assert long_csv.loc[("scratch", "voxceleb1"), "data"] == "d2"
    assert long_csv.loc[("scratch", "voxceleb1"), "data_missing"] == 3


def test_the_cost_column_sums_the_rows_compute_and_marks_rows_that_lack_it(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    for fold in (1, 2):
        add(store, "asit", "esc50", "probe", 1, 0.5, fold=fold, compute=compute(200.0, 1500))
    add(store, "asit", "voxceleb1", "probe", 1, 0.5, compute=compute(1000.0, 2_000_000))   # same leaderboard row
    add(store, "scratch", "esc50", "probe", 1, 0.4, fold=1, compute=compute(30.0, None))
    add(store, "scratch", "esc50", "probe", 1, 0.4, fold=2)                          # no compute recorded
    add(store, "old", "esc50", "probe", 1, 0.1, fold=1)

    wide = wide_table(long_table(load_results([store.path]))).set_index("Model")
    assert wide.loc["asit", "Cost"] == "23 min, 2.0M fwd"          # 1400 s; 3000 + 2M forwards
    assert wide.loc["scratch", "Cost"] == "30 s+"                  # one run of two recorded; no forwards counted
    assert wide.loc["old", "Cost"] == "—"
    assert "Cost" not in wide_table(long_table(load_results([store.path])), cost=False).columns

    only_old = ResultsStore(tmp_path / "old.jsonl")
    add(only_old, "old", "esc50", "probe", 1, 0.1, fold=1)
    assert "Cost" not in wide_table(long_table(load_results([only_old.path]))).columns   # nothing to show


def test_table_cli_takes_the_epoch_and_refuses_another(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    add(store, "asit", "voxceleb1", "finetune", 1, 0.8, **epochs(0.8, 0.6))
    assert cli_main(["table", "--results", str(store.path), "--out", str(tmp_path / "t"), "--epoch", "last",
                     "--no-reference", "--resamples", "20"]) == 0
    assert "60.0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["table", "--results", str(store.path), "--epoch", "middle"])
    assert "invalid choice: 'middle'" in capsys.readouterr().err
