"""Task metrics, computed by scikit-learn: mAP (macro over classes with positives) and accuracy.

mAP follows the AudioSet convention (AST, PANNs): average precision per class, averaged over the classes that
have at least one positive in the evaluated set (a class without positives has no defined AP).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from upstream.errors import AsitError


def _check(targets: np.ndarray, scores: np.ndarray) -> None:
    if targets.shape[0] != scores.shape[0] or targets.shape[0] == 0:
        raise AsitError(f"metric inputs disagree or are empty: targets {targets.shape}, scores {scores.shape}")


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """targets [N, C] in {0, 1}, scores [N, C] → mean AP over the classes with at least one positive."""
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    _check(targets, scores)
    keep = targets.sum(axis=0) > 0
    if not keep.any():
        raise AsitError("mAP is undefined: no class has a positive example")
    return float(average_precision_score(targets[:, keep], scores[:, keep], average="macro"))


def mean_auc(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """Macro ROC AUC over classes with both positives and negatives (AST's second AudioSet number); None if none."""
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    _check(targets, scores)
    positives = targets.sum(axis=0)
    keep = (positives > 0) & (positives < targets.shape[0])
    if not keep.any():
        return None
    return float(roc_auc_score(targets[:, keep], scores[:, keep], average="macro"))


def accuracy(targets: np.ndarray, scores: np.ndarray) -> float:
    """targets [N] class ids, scores [N, C] (argmax is the prediction)."""
    targets, scores = np.asarray(targets), np.asarray(scores)
    _check(targets, scores)
    return float(accuracy_score(targets, scores.argmax(axis=1)))


def primary_metric(multilabel: bool) -> str:
    return "mAP" if multilabel else "accuracy"


def evaluate(targets: np.ndarray, scores: np.ndarray, multilabel: bool) -> dict[str, float]:
    """{primary metric: value, …}: mAP (+ mAUC) for multi-label tasks, accuracy otherwise."""
    if multilabel:
        out = {"mAP": mean_average_precision(targets, scores)}
        auc = mean_auc(targets, scores)
        if auc is not None:
            out["mAUC"] = auc
        return out
    return {"accuracy": accuracy(targets, scores)}
