"""Metrics agree with scikit-learn and with values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tasks.metrics import accuracy, evaluate, mean_auc, mean_average_precision, primary_metric
from upstream.errors import AsitError

# 4 clips x 3 classes; class 2 has no positive in this set
TARGETS = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
SCORES = np.array([[0.9, 0.2, 0.5], [0.8, 0.4, 0.1], [0.3, 0.6, 0.7], [0.1, 0.1, 0.2]])


def test_map_by_hand_and_by_scikit_learn() -> None:
    # class 0 ranks pos, neg, pos, neg -> AP = (1/1 + 2/3) / 2; class 1 ranks neg(0.6), pos(0.4) -> AP = 1/2
    by_hand = ((1 + 2 / 3) / 2 + 1 / 2) / 2
    assert mean_average_precision(TARGETS, SCORES) == pytest.approx(by_hand)
    # classes without positives are left out, exactly as sklearn's macro average over the others
    assert mean_average_precision(TARGETS, SCORES) == pytest.approx(
        average_precision_score(TARGETS[:, :2], SCORES[:, :2], average="macro"))


def test_map_matches_scikit_learn_on_random_multilabel_data() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 12)) < 0.2).astype(int)
    targets[:, 5] = 0                                      # one class absent
    scores = rng.random((200, 12)) + 0.5 * targets
    keep = targets.sum(0) > 0
    expected = np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in np.flatnonzero(keep)])
    assert mean_average_precision(targets, scores) == pytest.approx(expected)
    assert mean_average_precision(targets, scores) > mean_average_precision(targets, rng.random((200, 12)))


def test_map_is_invariant_to_monotonic_score_transforms_and_perfect_for_perfect_scores() -> None:
    assert mean_average_precision(TARGETS, SCORES) == pytest.approx(
        mean_average_precision(TARGETS, np.log(SCORES)))
    assert mean_average_precision(TARGETS, TARGETS + 0.01) == pytest.approx(1.0)


def test_accuracy_and_auc() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
    assert accuracy(np.array([1, 0, 0, 0]), scores) == 0.75
    # class 0 of TARGETS: positives scored 0.9, 0.3 vs negatives 0.8, 0.1 -> 3 of 4 pairs ordered -> 0.75
    # class 1: positive 0.4 vs negatives 0.2, 0.6, 0.1 -> 2 of 3 -> 2/3; class 2 has no positive -> left out
    assert mean_auc(TARGETS, SCORES) == pytest.approx((0.75 + 2 / 3) / 2)


def test_evaluate_and_primary_metric() -> None:
    assert primary_metric(True) == "mAP" and primary_metric(False) == "accuracy"
    out = evaluate(TARGETS, SCORES, multilabel=True)
    assert list(out) == ["mAP", "mAUC"] and out["mAP"] == mean_average_precision(TARGETS, SCORES)
    assert evaluate(np.array([1, 0]), np.array([[0.2, 0.8], [0.3, 0.7]]), multilabel=False) == {"accuracy": 0.5}


def test_undefined_inputs_are_errors() -> None:
    with pytest.raises(AsitError, match="no class has a positive"):
        mean_average_precision(np.zeros((3, 2)), np.ones((3, 2)))
    with pytest.raises(AsitError, match="disagree or are empty"):
        accuracy(np.array([0, 1]), np.zeros((3, 2)))
