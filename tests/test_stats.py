"""Leaderboard statistics: bootstrap intervals cover the truth, paired comparisons find planted differences and not
null ones, McNemar is scipy's exact test, and `asit table` shows intervals, floors and `--compare`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from benchmarks.results import ResultsStore, cell_key, make_row
from benchmarks.stats import (Predictions, bootstrap_interval, clip_replicates, mcnemar_p_value, paired_comparison,
                              row_predictions)
from benchmarks.suite import TASK_PROTOCOLS
from benchmarks.table import FLOOR_FBANK, FLOOR_RANDOM, PRETRAINED, long_table, wide_table, write_leaderboard
from tasks.api import EncoderSpec, TaskCell, TaskResult
from tasks.metrics import evaluate
from upstream.cli import main as cli_main
from upstream.errors import AsitError

CLASSES = 5


def _scores(correct: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scores whose argmax is the target exactly where `correct`."""
    scores = rng.random((len(targets), CLASSES))
    wrong = (targets + 1 + rng.integers(0, CLASSES - 1, len(targets))) % CLASSES
    scores[np.arange(len(targets)), np.where(correct, targets, wrong)] += 2.0
    return scores


def _single_label(correct: np.ndarray, rng: np.random.Generator, paths: np.ndarray | None = None,
                  targets: np.ndarray | None = None) -> Predictions:
    targets = rng.integers(0, CLASSES, len(correct)) if targets is None else targets
    paths = np.array([f"/clips/{i:04d}.wav" for i in range(len(correct))]) if paths is None else paths
    return Predictions(_scores(correct, targets, rng), targets, paths)


def _save(predictions: Predictions, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, scores=predictions.scores, targets=predictions.targets, paths=predictions.paths,
             labels=np.array([f"c{i}" for i in range(predictions.scores.shape[1])]))
    return str(path)


def _rows(encoder: str, runs: list[tuple[int, int | None, Predictions]], folder: Path, task: str = "esc50",
          mode: str = "probe") -> pd.DataFrame:
    """Store-like rows of one encoder with each run's predictions saved as predictions.npz."""
    records = []
    for seed, fold, predictions in runs:
        path = _save(predictions, folder / encoder / f"seed{seed}-fold{fold}" / "predictions.npz")
        records.append({"encoder": encoder, "task": task, "mode": mode, "protocol": TASK_PROTOCOLS[task][0],
                        "seed": seed, "fold": fold, "metric": predictions.metric, "value": predictions.value(),
                        "extra": {"predictions": path}})
    return pd.DataFrame(records)


# ----------------------------------------------------------------------------------------------------- intervals

def test_clip_interval_covers_the_true_accuracy_in_about_95_percent_of_repetitions() -> None:
    """The issue's acceptance test: Bernoulli(p) correctness on 200 clips, 200 seeded repetitions."""
    truth, covered = 0.7, 0
    for repetition in range(200):
        rng = np.random.default_rng(1000 + repetition)
        predictions = _single_label(rng.random(200) < truth, rng)
        interval = bootstrap_interval([predictions.value()], predictions, resamples=400, seed=repetition)
        assert interval.basis == "clips" and interval.low <= predictions.value() <= interval.high
        covered += interval.low <= truth <= interval.high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_runs_interval_is_over_the_mean_of_resampled_runs_and_absent_for_one_run_without_predictions() -> None:
    values = [0.60, 0.62, 0.65, 0.70, 0.61]
    interval = bootstrap_interval(values, seed=3)
    assert interval.basis == "runs" and min(values) <= interval.low < np.mean(values) < interval.high <= max(values)
    assert bootstrap_interval(values, seed=3) == interval                          # fixed seed: reproducible
    none = bootstrap_interval([0.6])
    assert none.basis == "" and np.isnan(none.low) and np.isnan(none.high)
    with pytest.raises(AsitError, match="resamples must be at least 1"):
        bootstrap_interval(values, resamples=0)


@pytest.mark.parametrize("multilabel", [False, True])
def test_clip_resamples_are_the_metric_of_evaluate_on_the_resampled_clips(multilabel: bool) -> None:
    """The vectorised resampled metric is tasks.metrics.evaluate on targets[idx], scores[idx] (ties included)."""
    rng = np.random.default_rng(5)
    n = 120
    if multilabel:
        targets = (rng.random((n, 6)) < 0.1).astype(np.float32)
        targets[0, 5] = 1.0                                   # a rare class: absent from some resamples
        targets[:, 4] = 0.0                                   # a class without positives: left out
        scores = np.round(rng.random((n, 6)) + 0.4 * targets, 1)      # rounded: many tied scores
    else:
        targets = rng.integers(0, CLASSES, n)
        scores = np.round(rng.random((n, CLASSES)), 1)
    predictions = Predictions(scores, targets, np.array([f"c{i}" for i in range(n)]))
    replicates = clip_replicates(predictions, resamples=25, seed=9)
    draws = np.random.default_rng(9).integers(0, n, (25, n))
    expected = [evaluate(targets[i], scores[i], multilabel)["mAP" if multilabel else "accuracy"] for i in draws]
    np.testing.assert_allclose(replicates, expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------- paired comparisons

def test_paired_comparison_finds_a_planted_difference(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    right_a = rng.random(400) < 0.6
    right_b = right_a.copy()
    right_b[rng.choice(np.flatnonzero(~right_a), 60, replace=False)] = True       # B right on 15 % more clips
    a = _single_label(right_a, rng)
    b = _single_label(right_b, rng, a.paths, a.targets).take(rng.permutation(400))    # B's rows in another order
    result = paired_comparison(_rows("a", [(0, 1, a)], tmp_path), _rows("b", [(0, 1, b)], tmp_path))
    assert result.difference == pytest.approx(-15.0) and result.n_clips == 400 and result.n_runs == 1
    assert result.ci_high < 0 and result.ci_low < result.difference < result.ci_high
    assert result.ci_high - result.ci_low < 9.0        # paired: ≈ 7 pp wide; resampling A and B apart gives ≈ 13
    assert result.p_bootstrap < 0.01 and result.p_mcnemar < 0.01
    assert (result.a_only, result.b_only) == (0, 60)


def test_paired_comparison_does_not_find_a_null_difference(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    a = _single_label(rng.random(300) < 0.7, rng)
    b = _single_label(rng.random(300) < 0.7, rng, a.paths, a.targets)
    result = paired_comparison(_rows("a", [(0, None, a)], tmp_path, task="voxceleb1"),
                               _rows("b", [(0, None, b)], tmp_path, task="voxceleb1"))
    assert result.ci_low < 0 < result.ci_high
    assert result.p_bootstrap > 0.05 and result.p_mcnemar > 0.05


def test_several_runs_pair_by_seed_and_fold_and_clips_by_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    folds = {fold: np.array([f"/esc/{fold}-{i}.wav" for i in range(100)]) for fold in (1, 2)}
    runs_a, runs_b = [], []
    for seed in (0, 1):
        for fold, paths in folds.items():
            targets = rng.integers(0, CLASSES, 100)
            runs_a.append((seed, fold, _single_label(rng.random(100) < 0.8, rng, paths, targets)))
            runs_b.append((seed, fold, _single_label(rng.random(100) < 0.5, rng, paths, targets)
                           .take(rng.permutation(100))))
    runs_b.append((5, 1, runs_b[0][2]))                                   # seed 5: A has no such run, left out
    result = paired_comparison(_rows("a", runs_a, tmp_path), _rows("b", runs_b, tmp_path), resamples=500)
    expected = np.mean([pa.value() - pb.value() for (_, _, pa), (_, _, pb) in zip(runs_a, runs_b)]) * 100
    assert result.n_runs == 4 and result.n_clips == 200 and result.difference == pytest.approx(expected)
    assert result.ci_low < result.difference < result.ci_high and result.p_bootstrap < 0.01


def test_mcnemar_is_scipys_exact_binomial_test_on_the_discordant_clips(tmp_path: Path) -> None:
    right_a = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)
    right_b = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)        # A only: 1 clip, B only: 6 clips
    p, a_only, b_only = mcnemar_p_value(right_a, right_b)
    assert (a_only, b_only) == (1, 6) and p == binomtest(1, 7, 0.5).pvalue == pytest.approx(16 / 128)
    rng = np.random.default_rng(0)
    a = _single_label(right_a, rng)
    b = _single_label(right_b, rng, a.paths, a.targets)
    result = paired_comparison(_rows("a", [(0, 1, a)], tmp_path), _rows("b", [(0, 1, b)], tmp_path), resamples=50)
    assert result.p_mcnemar == binomtest(1, 7, 0.5).pvalue and (result.a_only, result.b_only) == (1, 6)
    assert mcnemar_p_value(right_a, right_a)[0] == 1.0


def test_paired_comparison_refuses_without_predictions_or_common_clips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = _single_label(rng.random(50) < 0.5, rng)
    b = _single_label(rng.random(50) < 0.5, rng, paths=np.array([f"/other/{i}.wav" for i in range(50)]))
    rows_a, rows_b = _rows("enc-a", [(0, 1, a)], tmp_path), _rows("enc-b", [(0, 1, b)], tmp_path)
    with pytest.raises(AsitError, match=r"enc-a and enc-b share no test clips on esc50"):
        paired_comparison(rows_a, rows_b)
    bare = rows_b.assign(extra=[{}])
    with pytest.raises(AsitError, match=r"^enc-b has no usable predictions on esc50 probe .*no predictions saved"):
        paired_comparison(rows_a, bare)
    with pytest.raises(AsitError, match="no run with the same seed and fold"):
        paired_comparison(rows_a, rows_b.assign(seed=3))
    assert row_predictions({**rows_a.iloc[0], "value": 0.01}) == (None, "predictions disagree with the row")
    assert row_predictions({**rows_a.iloc[0], "metric": "mAP"}) == (None, "predictions disagree with the row")
    (tmp_path / "bad.npz").write_text("not a zip")
    assert row_predictions({**rows_a.iloc[0], "extra": {"predictions": str(tmp_path / "bad.npz")}}) == (
        None, "predictions unreadable")


# ------------------------------------------------------------------------------------------------------- the table

def _append(store: ResultsStore, encoder: str, task: str, seed: int, fold: int | None, value: float, *,
            init: str = "pretrained", arch: str = "vit", predictions: str | None = None, sha: str = "a" * 64) -> None:
    cell = TaskCell(EncoderSpec(encoder, "/ckpt.pt", init), task, "probe", TASK_PROTOCOLS[task][0], seed, fold)
    extra = {"encoder_arch": arch, **({"predictions": predictions} if predictions else {})}
    store.append(make_row(cell, cell_key(cell, sha), sha, result=TaskResult("accuracy", value, extra)))


@pytest.fixture()
def board(tmp_path: Path) -> ResultsStore:
    """A tiny store: ESC-50 fold-1 runs with predictions (two pretrained encoders, a random-init twin, an fbank
    floor), SC-V2 over three seeds without, and SID n = 1 runs without predictions or with a deleted file."""
    rng = np.random.default_rng(4)
    paths = np.array([f"/esc/1-{i}.wav" for i in range(200)])
    store = ResultsStore(tmp_path / "results.jsonl")
    for encoder, p, init, arch in (("vit-a", 0.85, "pretrained", "vit"), ("vit-b", 0.6, "pretrained", "vit"),
                                   ("vit-a-scratch", 0.3, "scratch", "vit"), ("fbank", 0.4, "pretrained",
                                                                              "fbank_stats")):
        predictions = _single_label(rng.random(200) < p, rng, paths)
        saved = _save(predictions, tmp_path / "runs" / encoder / "predictions.npz")
        _append(store, encoder, "esc50", 0, 1, predictions.value(), init=init, arch=arch, predictions=saved)
    for seed, value in enumerate((0.70, 0.74, 0.72)):
        _append(store, "vit-a", "speechcommands_v2", seed, None, value)
    _append(store, "vit-a", "voxceleb1", 0, None, 0.5)                                   # an older row
    _append(store, "vit-b", "voxceleb1", 0, None, 0.4, predictions=str(tmp_path / "deleted.npz"))
    _append(store, "fbank", "voxceleb1", 0, None, 0.3, arch="")             # kind from its other rows
    return store


def test_long_table_has_intervals_and_the_wide_table_marks_floors(board: ResultsStore) -> None:
    long = long_table(board.successes()).set_index(["model", "task"])
    assert {"ci_low", "ci_high", "ci_basis", "kind"} <= set(long.columns)
    measured = long[long["ci_basis"].isin(["clips", "runs"])]
    assert len(measured) == 5 and (measured["ci_low"] <= measured["mean"]).all()
    assert (measured["mean"] <= measured["ci_high"]).all()
    assert long.loc[("vit-a", "esc50"), "ci_basis"] == "clips"
    assert long.loc[("vit-a", "speechcommands_v2"), "ci_basis"] == "runs"
    assert long.loc[("vit-a", "voxceleb1"), "ci_basis"] == "none (no predictions saved)"
    assert long.loc[("vit-b", "voxceleb1"), "ci_basis"] == "none (predictions file missing)"
    assert long.loc[[("vit-a", "voxceleb1")], ["ci_low", "ci_high"]].isna().all(axis=None)
    assert long.loc[("fbank", "voxceleb1"), "kind"] == FLOOR_FBANK
    kinds = long.reset_index().drop_duplicates("model").set_index("model")["kind"]
    assert kinds.to_dict() == {"vit-a": PRETRAINED, "vit-b": PRETRAINED, "vit-a-scratch": FLOOR_RANDOM,
                               "fbank": FLOOR_FBANK}

    wide = wide_table(long.reset_index())
    assert list(wide["Model"]) == ["vit-a", "vit-b", "fbank", "vit-a-scratch"]      # floors together, after
    assert list(wide["Kind"]) == [PRETRAINED, PRETRAINED, FLOOR_FBANK, FLOOR_RANDOM]
    cells = wide.set_index("Model")
    esc = cells.loc["vit-a", "ESC-50 acc [esc50/train4-test1]"]
    low, high = long.loc[("vit-a", "esc50"), ["ci_low", "ci_high"]]
    assert esc == f"{long.loc[('vit-a', 'esc50'), 'mean']:.1f} [{low:.1f}, {high:.1f}] (n=1)"
    assert cells.loc["vit-a", "SC-V2 acc [speechcommands/v2-35class]"].startswith("72.0 ± 2.0 [")
    assert cells.loc["vit-a", "SID acc [voxceleb1/iden-split]"] == "50.0 (n=1)"          # no brackets


def test_write_leaderboard_explains_intervals_floors_and_missing_predictions(board: ResultsStore,
                                                                             tmp_path: Path) -> None:
    files = write_leaderboard([board.path], tmp_path / "out", reference=False, resamples=300)
    md = files.markdown.read_text()
    assert "over runs" in md and "over test clips" in md and "300 resamples" in md and "floor: fbank stats" in md
    assert "3 n = 1 cell(s) have no interval" in md and "1 predictions file missing" in md
    long = pd.read_csv(files.long_csv)
    assert {"ci_low", "ci_high", "kind"} <= set(long.columns)
    assert pd.read_csv(files.csv).columns[1] == "Kind" and files.png.is_file() and files.latex.is_file()


def test_compare_through_the_cli(board: ResultsStore, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    argv = ["table", "--results", str(board.path), "--out", str(out), "--resamples", "500"]
    assert cli_main([*argv, "--compare", "vit-a", "vit-b@aaaaaaaa"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "compare_vit-a_vs_vit-b@aaaaaaaa.csv")
    assert len(table) == 1 and table.loc[0, "task"] == "esc50" and table.loc[0, "n_clips"] == 200
    difference = table.loc[0, "difference"]
    assert difference > 10 and table.loc[0, "ci_low"] > 0 and table.loc[0, "p_bootstrap"] < 0.01
    assert f"{difference:+.1f} [" in printed and "p (McNemar)" in printed
    assert ("Not compared:\n- vit-a and vit-b have no usable predictions on voxceleb1 probe [voxceleb1/iden-split] "
            "(no predictions saved; predictions file missing)") in printed                   # the SID column
    assert (out / "compare_vit-a_vs_vit-b@aaaaaaaa.md").is_file()
    assert not (out / "leaderboard.md").exists()

    assert cli_main([*argv, "--compare", "vit-a", "nope"]) == 2
    assert "unknown encoder 'nope'; the results hold fbank, vit-a, vit-a-scratch, vit-b" in capsys.readouterr().err
    assert cli_main([*argv, "--compare", "vit-a", "vit-b", "--task", "SID"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable predictions on voxceleb1" in err
    assert cli_main([*argv, "--task", "esc50"]) == 2
    assert "--task and --mode select the columns of --compare" in capsys.readouterr().err


def test_compare_names_checkpoints_like_the_table_and_filters_modes(tmp_path: Path) -> None:
    from benchmarks.table import compare

    rng = np.random.default_rng(6)
    paths = np.array([f"/sc/{i}.wav" for i in range(150)])
    store = ResultsStore(tmp_path / "r.jsonl")
    for sha, p in (("1" * 64, 0.9), ("2" * 64, 0.5)):
        predictions = _single_label(rng.random(150) < p, rng, paths)
        saved = _save(predictions, tmp_path / sha[:4] / "predictions.npz")
        _append(store, "enc", "speechcommands_v2", 0, None, predictions.value(), predictions=saved, sha=sha)
    rows = store.successes()
    with pytest.raises(AsitError, match="encoder 'enc' ran with 2 checkpoints: name one of enc@11111111, "
                                        "enc@22222222"):
        compare(rows, "enc", "enc@2222")
    with pytest.raises(AsitError, match="are the same runs"):
        compare(rows, "enc@11111111", "enc@1")
    table, notes = compare(rows, "enc@1111", "enc@22222222", mode="probe (frozen)", resamples=200)
    assert len(table) == 1 and not notes and table.loc[0, "a"] == "enc@11111111" and table.loc[0, "difference"] > 0
    with pytest.raises(AsitError, match="share no task × mode × protocol with mode finetune"):
        compare(rows, "enc@1111", "enc@2222", mode="finetune")
