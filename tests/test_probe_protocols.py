"""Probe protocols on the embedding cache: cosine kNN (k chosen like C) and few-shot draws, checked on constructed
embeddings with known answers, and run on cached embeddings without another encoder forward."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import tasks.probe
from benchmarks.results import ResultsStore, cell_key, make_row
from benchmarks.table import aggregate, probe_protocol
from tasks.api import EncoderSpec, TaskCell, TaskResult
from tasks.datasets import Example
from tasks.datasets.base import DatasetIndex
from tasks.metrics import evaluate
from tasks.probe import (few_shot_rows, fit_and_predict, grid_scores, knn_neighbours, knn_shares, run_probe,
                         select)
from tasks.recipes import RUN_ONLY_FIELDS, load_recipe, recipe_dict, recipe_digest
from tasks.task_data import TaskData
from upstream.errors import AsitError

from conftest import write_tone_clips

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KNN = {"classifier": "knn", "n_jobs": 1, "num_workers": 0}


def _examples(n: int) -> list[Example]:
    return [Example(Path(f"{i}.wav"), ("a",), group=f"g{i}") for i in range(n)]


def _clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two tight clusters far apart in 6 dimensions, alternating labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return np.where(y[:, None] == 0, 5.0, -5.0) * np.ones(6) + rng.normal(0, 0.1, (n, 6)), y


# ---------------------------------------------------------------------------------------------------------- kNN

def test_knn_on_two_separated_clusters_is_perfect_and_k_is_recorded() -> None:
    recipe = load_recipe("esc50", "probe", overrides={**KNN, "knn_k": [1, 3]})
    (xtr, ytr), (xva, yva), (xte, yte) = _clusters(20, 0), _clusters(10, 1), _clusters(10, 2)
    layer, k, info = select({2: np.concatenate([xtr, xva])}, np.concatenate([ytr, yva]), _examples(20), 10,
                            False, 2, recipe, 0)
    assert info["selection"] == {"2": {"1": 1.0, "3": 1.0}} and info["selection_on"] == "valid split"
    assert (layer, k) == (2, 1) and info["selected"] == {"layer": 2, "k": 1, "score": 1.0}, "ties: smaller k"
    scores = fit_and_predict(np.concatenate([xtr, xva]), np.concatenate([ytr, yva]), xte, k, False, 2, recipe, 0)
    assert evaluate(yte, scores, False) == {"accuracy": 1.0}
    np.testing.assert_array_equal(scores, np.eye(2)[yte])      # 1-NN: the share of one neighbour is 0 or 1


def test_knn_neighbours_are_cosine_nearest_first_with_ties_to_the_lower_index(monkeypatch: pytest.MonkeyPatch
                                                                               ) -> None:
    fit = np.array([[0.0, 1.0], [1.0, 0.0], [3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    # cosine to (2, 0.1): rows 1 and 2 equal (same direction), then (1, 1), (0, 1), (-1, 0)
    np.testing.assert_array_equal(knn_neighbours(fit, np.array([[2.0, 0.1]]), 5), [[1, 2, 3, 0, 4]])
    # the k-th place is tied (rows 1 and 2): the lower index is kept; k is capped at the fit rows
    np.testing.assert_array_equal(knn_neighbours(fit, np.array([[1.0, 0.0]]), 1), [[1]])
    assert knn_neighbours(fit, np.array([[1.0, 0.0]]), 50).shape == (1, 5)
    # many query rows in blocks of one: the same answer as in one block
    rng = np.random.default_rng(0)
    fit_x, query = rng.normal(size=(30, 4)), rng.normal(size=(7, 4))
    whole = knn_neighbours(fit_x, query, 4)
    monkeypatch.setattr(tasks.probe, "KNN_BLOCK", 30)             # one query row per block
    np.testing.assert_array_equal(knn_neighbours(fit_x, query, 4), whole)


def test_one_nn_leave_one_out_matches_a_hand_computation() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3)) + np.repeat(np.eye(3) * 1.5, 4, axis=0)
    y = np.repeat(np.arange(3), 4)
    splits = [(np.delete(np.arange(12), i), np.array([i])) for i in range(12)]
    recipe = load_recipe("esc50", "probe", overrides={**KNN, "knn_k": [1]})
    correct = 0
    for fit, (i,) in splits:                   # by hand: standardise on the fit rows, largest cosine, its label
        mean, std = x[fit].mean(0), x[fit].std(0)
        rows, query = (x[fit] - mean) / std, (x[i] - mean) / std
        cosine = rows @ query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(query))
        correct += int(y[fit][np.argmax(cosine)] == y[i])
    assert grid_scores(x, y, splits, False, 3, recipe, 0) == {1.0: pytest.approx(correct / 12)}
    assert 0 < correct < 12, "the check means something only if 1-NN both hits and misses here"


def test_multilabel_knn_scores_are_label_shares_and_give_map() -> None:
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1]], np.float32)
    neighbours = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    shares = dict(knn_shares(neighbours, y, [3, 1], True, 3))
    np.testing.assert_allclose(shares[3], [[2 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(shares[1], [[1, 1, 0], [0, 1, 1]])
    single = dict(knn_shares(neighbours, np.array([2, 0, 0, 1]), [4], False, 4))[4]
    np.testing.assert_allclose(single, [[0.5, 0.25, 0.25, 0.0]] * 2)     # class 3: no clip, share 0
    recipe = load_recipe("as20k", "probe", overrides={**KNN, "knn_k": [2]})
    x = np.repeat(np.eye(3) * 4, 6, axis=0) + np.random.default_rng(1).normal(0, 0.2, (18, 3))
    targets = np.repeat(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], np.float32), 6, axis=0)
    scores = fit_and_predict(x[::2], targets[::2], x[1::2], 2, True, 3, recipe, 0)
    assert scores.shape == (9, 3) and set(np.unique(scores)) <= {0.0, 0.5, 1.0}
    assert evaluate(targets[1::2], scores, True)["mAP"] == 1.0


def test_knn_k_is_chosen_on_cross_validation_and_capped_at_the_fit_rows() -> None:
    # labels flipped on a quarter of the training clips: 1-NN copies the noise, a wide vote does not
    rng = np.random.default_rng(0)
    x, y = _clusters(80, 4)
    noisy = y.copy()
    flip = rng.choice(80, 20, replace=False)
    noisy[flip] = 1 - noisy[flip]
    folds = 1 + (np.arange(80) // 2) % 4                  # both classes in every fold
    esc = [Example(Path(f"{i}.wav"), ("a",), fold=int(f)) for i, f in enumerate(folds)]
    recipe = load_recipe("esc50", "probe", overrides={**KNN, "knn_k": [1, 15, 500]})
    layer, k, info = select({0: x}, noisy, esc, 0, False, 2, recipe, 0)
    grid = info["selection"]["0"]
    assert info["selection_on"] == "4-fold cross-validation over the training folds"
    assert set(grid) == {"1", "15", "500"} and grid["15"] > grid["1"] and k == 15 and info["selected"]["k"] == 15
    # k = 500 > the 60 fit rows of each split: all of them vote, so every held clip gets the fit rows' majority
    # class (ties to class 0)
    by_hand = np.mean([np.mean(noisy[folds == f] == np.argmax(np.bincount(noisy[folds != f], minlength=2)))
                       for f in range(1, 5)])
    assert grid["500"] == pytest.approx(by_hand, abs=1e-6)
    one = load_recipe("esc50", "probe", overrides={**KNN, "knn_k": [7]})
    assert select({0: x}, noisy, esc, 0, False, 2, one, 0)[2]["selection_on"] == "none (one layer, one k)"


# -------------------------------------------------------------------------------------------------- few-shot

def test_few_shot_draws_are_seeded_per_draw_and_keep_every_clip_of_a_small_class() -> None:
    y = np.array([0] * 10 + [1] * 10 + [2] * 2)
    first = few_shot_rows(y, False, 4, 3, seed=0, draw=0)
    assert np.array_equal(first, few_shot_rows(y, False, 4, 3, seed=0, draw=0)), "a draw is reproducible"
    others = [few_shot_rows(y, False, 4, 3, seed=0, draw=d) for d in (1, 2)] + [few_shot_rows(y, False, 4, 3, 1, 0)]
    assert all(not np.array_equal(first, other) for other in others), "draws and seeds differ"
    for rows in [first, *others]:
        assert np.bincount(y[rows], minlength=4).tolist() == [3, 3, 2, 0]      # class 2 has 2 clips: both kept
        assert np.all(np.diff(rows) > 0)
    # multi-label: rarest class first, topped up to k clips carrying it; a clip counts for all its labels
    targets = np.zeros((30, 4), np.float32)
    targets[:, 0] = 1                                # every clip carries class 0
    targets[:12, 1] = 1
    targets[12:, 2] = 1
    targets[:2, 3] = 1                               # class 3: two clips
    for draw in range(4):
        rows = few_shot_rows(targets, True, 4, 3, seed=5, draw=draw)
        counts = targets[rows].sum(0)
        assert counts[3] == 2 and counts[1] >= 3 and counts[2] == 3 and counts[0] == len(rows)
        assert len(rows) <= 3 + 3 + 2, "at most k per class, drawn from the rarest class up"


def test_recipes_name_and_digest_the_new_protocols() -> None:
    base = load_recipe("esc50", "probe")
    assert (base.classifier, base.knn_k, base.shots, base.draws) == ("logistic", [1, 5, 10, 20], 0, 5)
    # the digest of a recipe that uses neither protocol is the one it had before they existed: old cells keep keys
    fields = {k: v for k, v in recipe_dict(base).items() if k not in RUN_ONLY_FIELDS | {"knn_k", "shots", "draws"}}
    before = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert recipe_digest(base) == before

    def digest(**changes: object) -> str:
        return recipe_digest(dataclasses.replace(base, **changes))
    assert digest(knn_k=[3]) == digest(draws=9) == recipe_digest(base), "unused by a full-data logistic probe"
    distinct = {recipe_digest(base), digest(classifier="knn"), digest(classifier="knn", knn_k=[3]),
                digest(shots=1), digest(shots=1, draws=2), digest(shots=2), digest(classifier="knn", shots=1)}
    assert len(distinct) == 7
    with pytest.raises(AsitError, match="recipe knn_k must be a non-empty list of whole numbers >= 1"):
        load_recipe("esc50", "probe", overrides=["knn_k=[0]"])
    with pytest.raises(AsitError, match="recipe draws must be > 0"):
        load_recipe("esc50", "probe", overrides=["draws=0", "shots=1"])
    with pytest.raises(AsitError, match="recipe layer: best"):
        load_recipe("esc50", "probe", overrides=["shots=1", "layer=best"])
    with pytest.raises(AsitError, match="recipe classifier must be one of logistic, mlp, knn"):
        load_recipe("esc50", "probe", overrides=["classifier=svm"])


# ---------------------------------------------------------------------------- on the cache, through run_probe

def _tone_task(folder: Path) -> TaskData:
    """A two-class task of 24 short tone clips in train / valid / test parts."""
    paths = write_tone_clips(folder, 24, seed=1, seconds=(0.3, 0.5))
    split = ["train"] * 12 + ["valid"] * 6 + ["test"] * 6
    examples = [Example(p, ("low" if i % 2 else "high",), split=split[i], group=f"s{i}") for i, p in enumerate(paths)]
    index = DatasetIndex("tones", folder, examples, ["high", "low"])
    return TaskData("speechcommands_v2", index, {s: index.split(s) for s in ("train", "valid", "test")},
                    {s: [s] for s in ("train", "valid", "test")})


def test_knn_and_few_shot_probes_run_no_encoder_forward_after_a_linear_probe(tmp_path: Path,
                                                                              tiny_encoder_file: Path) -> None:
    data, spec = _tone_task(tmp_path / "tones"), EncoderSpec("tiny", str(tiny_encoder_file))
    common = {"num_workers": 0, "n_jobs": 1, "max_iter": 200, "cache_dir": str(tmp_path / "cache")}

    def probe(name: str, **overrides: object) -> TaskResult:
        recipe = load_recipe("speechcommands_v2", "probe", overrides={**common, **overrides})
        return run_probe(data, spec, recipe, 0, tmp_path / name)

    linear = probe("linear", C=[1.0])
    assert linear.extra["encoder_forwards"] > 0 and linear.extra["cache_misses"] == 3
    assert linear.extra["shots"] == 0 and "k" not in linear.extra
    knn = probe("knn", classifier="knn", knn_k=[1, 3])
    assert (knn.extra["encoder_forwards"], knn.extra["cache_hits"], knn.extra["cache_misses"]) == (0, 3, 0)
    assert knn.extra["selection_on"] == "valid split" and set(knn.extra["selection"]["2"]) == {"1", "3"}
    assert knn.extra["k"] == knn.extra["selected"]["k"] and knn.extra["classifier"] == "knn"
    shots = probe("shots", classifier="knn", knn_k=[1, 3], shots=2, draws=3)
    extra = shots.extra
    assert (extra["encoder_forwards"], extra["cache_hits"]) == (0, 3)
    assert (extra["shots"], extra["draws"], extra["k"], extra["draw_n_fit"]) == (2, 3, 1, [4, 4, 4])
    assert extra["selected"] == {"layer": 2, "k": 1, "score": None} and extra["selection_splits"] == 0
    assert shots.value == pytest.approx(np.mean(extra["draw_scores"]), abs=1e-6)
    assert extra["draw_std"] == pytest.approx(np.std(extra["draw_scores"], ddof=1), abs=1e-6)
    saved = np.load(extra["predictions"])                  # the first draw's test scores
    assert evaluate(saved["targets"], saved["scores"], False)["accuracy"] == pytest.approx(extra["draw_scores"][0])
    logistic = probe("shots_logistic", C=[0.5, 2.0], shots=1, draws=2)
    assert logistic.extra["C"] == 0.5 and logistic.extra["encoder_forwards"] == 0
    assert logistic.extra["selection_on"] == "none (1-shot: fixed C, the recipe's first)"


# ----------------------------------------------------------------------------------------------- leaderboard

def test_the_leaderboard_never_shows_a_knn_or_few_shot_probe_as_the_logistic_one(tmp_path: Path) -> None:
    assert probe_protocol("probe", {"classifier": "logistic", "shots": 0}) == ""
    assert probe_protocol("probe", {}) == "" and probe_protocol("finetune", {"classifier": "knn"}) == ""
    assert probe_protocol("probe", {"classifier": "knn", "shots": 5}) == " · 5-shot knn"
    store = ResultsStore(tmp_path / "results.jsonl")
    for encoder, extra, value in (("a", {"classifier": "logistic", "shots": 0}, 0.5), ("b", {"classifier": "knn"}, 0.4),
                                  ("b", {"classifier": "logistic", "shots": 4}, 0.3)):
        cell = TaskCell(EncoderSpec(encoder, str(tmp_path / f"{encoder}.pt")), "voxceleb1", "probe",
                        "voxceleb1/iden-split", seed=0)
        digest = json.dumps(extra, sort_keys=True)
        store.append(make_row(cell, cell_key(cell, "a" * 64, digest), "a" * 64, recipe_digest=digest,
                              result=TaskResult("accuracy", value, extra)))
    modes = aggregate(store.successes()).set_index("encoder")["mode"]
    assert modes["a"] == "probe" and sorted(modes["b"]) == ["probe · 4-shot logistic", "probe · knn"]
