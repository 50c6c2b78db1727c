"""Uncertainty for the leaderboard: percentile-bootstrap intervals and paired comparisons on the same test clips.

Why: small test sets and a handful of seeds make one-point differences noise, so every leaderboard cell carries a
95 % interval and two encoders are compared run by run and clip by clip (docs/benchmarks.md, "Statistics").

- `bootstrap_interval`: n > 1 runs → resample the runs' values (seeds × folds) and take the mean; n = 1 run with
  saved predictions → resample the test clips and recompute the metric; n = 1 without predictions → no interval.
- `paired_comparison`: pair runs by (seed, fold) and clips by path; resample the clips of each fold once per
  replicate, the same draw for A, B and every seed of that fold; report A − B in percentage points, a percentile
  interval, a two-sided bootstrap p-value and, for accuracy, exact McNemar tests (scipy.stats.binomtest).

Metric values are recomputed with `tasks.metrics.evaluate` (the one definition of accuracy and mAP). Calling it
once per resample would take minutes per cell (sklearn's per-class average precision), so the resamples use a
vectorised form of the same metric (accuracy: mean per-clip correctness; mAP: sklearn's step-function AP over
tied-score groups, with resampling as integer clip weights), which must reproduce `evaluate` on the full test set
to 1e-9 before it is used; if it does not, every resample goes through `evaluate` instead.
"""

from __future__ import annotations

import functools
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from tasks.metrics import evaluate
from upstream.errors import AsitError

RESAMPLES = 2000
SEED = 0
CONFIDENCE = 0.95
VALUE_TOLERANCE = 1e-6           # predictions must reproduce the row's value this closely to be used
_FAST_TOLERANCE = 1e-9           # the vectorised metric must reproduce evaluate() this closely
_BLOCK_ELEMENTS = 2_000_000      # resamples × clips per block (bounds memory)


# ------------------------------------------------------------------------------------------------- predictions

@dataclass(frozen=True)
class Predictions:
    """The test-set outputs of one run (a run's predictions.npz): scores [N, C], targets ([N] class ids or [N, C]
    multi-hot) and each clip's path, row by row."""

    scores: np.ndarray
    targets: np.ndarray
    paths: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        bad_targets = self.targets.ndim not in (1, 2) or (self.targets.ndim == 2
                                                          and self.targets.shape != self.scores.shape)
        if self.scores.ndim != 2 or bad_targets or len(self.targets) != n or len(self.paths) != n or n == 0:
            raise AsitError(f"predictions disagree or are empty: scores {self.scores.shape}, targets "
                            f"{self.targets.shape}, paths {self.paths.shape}")

    @property
    def multilabel(self) -> bool:
        return self.targets.ndim == 2

    @property
    def metric(self) -> str:
        return "mAP" if self.multilabel else "accuracy"

    def value(self) -> float:
        """The metric on the whole test set, by `tasks.metrics.evaluate` (computed once: mAP on AudioSet-sized sets
        takes seconds)."""
        return self._value

    @functools.cached_property
    def _value(self) -> float:
        return evaluate(self.targets, self.scores, self.multilabel)[self.metric]

    def take(self, index: np.ndarray) -> "Predictions":
        return Predictions(self.scores[index], self.targets[index], self.paths[index])


def load_predictions(path: str | Path) -> Predictions:
    """Read a predictions.npz (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return Predictions(np.asarray(data["scores"], dtype=np.float64), np.asarray(data["targets"]),
                               np.asarray(data["paths"]).astype(str))
    except FileNotFoundError:
        raise AsitError(f"predictions {path} do not exist") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AsitError(f"predictions {path} cannot be read ({exc.__class__.__name__}: {exc})") from None


def row_predictions(row: Mapping[str, Any]) -> tuple[Predictions | None, str]:
    """A store row's predictions, or None and why not: none saved (older, HEAR or s3prl rows), file missing or
    unreadable, or predictions that do not reproduce the row's metric and value (then they are not that run's)."""
    extra = row.get("extra")
    path = extra.get("predictions") if isinstance(extra, dict) else None
    if not path:
        return None, "no predictions saved"
    if not Path(path).is_file():
        return None, "predictions file missing"
    try:
        predictions = load_predictions(path)
        value = predictions.value()
    except AsitError:
        return None, "predictions unreadable"
    stored = row.get("value")
    if predictions.metric != row.get("metric") or stored is None or not abs(value - float(stored)) <= VALUE_TOLERANCE:
        return None, "predictions disagree with the row"
    return predictions, ""


# ------------------------------------------------------------------------------------------------- resampling

class Interval(NamedTuple):
    """A confidence interval in the units of the values given; basis "runs", "clips" or "" (none)."""

    low: float
    high: float
    basis: str


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    replicates = replicates[np.isfinite(replicates)]
    if not len(replicates):
        return math.nan, math.nan
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


def _blocks(resamples: int, n: int) -> Iterator[int]:
    """Block sizes summing to `resamples`, each block × n ≤ _BLOCK_ELEMENTS."""
    step = max(1, _BLOCK_ELEMENTS // max(1, n))
    for start in range(0, resamples, step):
        yield min(step, resamples - start)


def _check_arguments(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise AsitError(f"resamples must be at least 1, not {resamples}")
    if not 0.0 < confidence < 1.0:
        raise AsitError(f"confidence must be between 0 and 1, not {confidence}")


class _ClassRanking(NamedTuple):
    """One class's ranking, reduced to what its AP needs. Segment k runs down the descending-score order to the end
    of the k-th tied-score group that holds a positive; clips ranked below the last such group do not matter.
    `clips`: the clips that matter, in rank order; `starts`: where each segment starts in it; `positives`,
    `positive_starts`: the same for the positive clips."""

    clips: np.ndarray
    starts: np.ndarray
    positives: np.ndarray
    positive_starts: np.ndarray


def _class_ranking(positive: np.ndarray, scores: np.ndarray) -> _ClassRanking:
    order = np.argsort(-scores, kind="mergesort")
    ordered = scores[order]
    ends = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]          # last rank of each tie group
    group = np.repeat(np.arange(len(ends)), np.diff(np.r_[-1, ends]))           # tie group of each rank
    has_positive = np.zeros(len(ends), bool)
    has_positive[group[positive[order]]] = True
    positive_ends = ends[has_positive]
    if not len(positive_ends):
        empty = np.zeros(0, np.int64)
        return _ClassRanking(empty, empty, empty, empty)
    clips = order[:positive_ends[-1] + 1]
    segment = np.searchsorted(positive_ends, np.arange(len(clips)), side="left")
    starts = np.r_[0, positive_ends[:-1] + 1]
    is_positive = positive[clips]
    return _ClassRanking(clips, starts, clips[is_positive],
                         np.searchsorted(segment[is_positive], np.arange(len(positive_ends)), side="left"))


def _fast_map(rankings: Sequence[_ClassRanking], index: np.ndarray) -> np.ndarray:
    """mAP of each resample (clip indices [B, N]): per class, sklearn's average precision Σ ΔRecall · Precision
    over the tied-score thresholds that hold a positive, from how often each clip was drawn; averaged over the
    classes with a drawn positive (NaN where none has)."""
    b, n = index.shape
    # [clips, resamples]: gathering whole rows of it per class is what makes this fast
    drawn = np.bincount((index * b + np.arange(b)[:, None]).ravel(), minlength=n * b).reshape(n, b)
    drawn = drawn.astype(np.int32)
    total, classes = np.zeros(b), np.zeros(b)
    for ranking in rankings:
        if not len(ranking.clips):
            continue
        tps = np.cumsum(np.add.reduceat(np.take(drawn, ranking.positives, axis=0), ranking.positive_starts,
                                        axis=0), axis=0)
        predicted = np.cumsum(np.add.reduceat(np.take(drawn, ranking.clips, axis=0), ranking.starts, axis=0),
                              axis=0)
        tps, predicted = tps.astype(np.float64), predicted.astype(np.float64)
        positives = tps[-1]
        has = positives > 0
        precision = np.divide(tps, predicted, out=np.zeros_like(tps), where=predicted > 0)
        gain = np.diff(tps, axis=0, prepend=0.0)
        ap = np.divide((gain * precision).sum(axis=0), positives, out=np.zeros(b), where=has)
        total += np.maximum(0.0, ap)
        classes += has
    return np.divide(total, classes, out=np.full(b, np.nan), where=classes > 0)


def _resampled_metric(predictions: Predictions) -> Callable[[np.ndarray], np.ndarray]:
    """A function from clip indices [B, N] to the metric of each resample [B] (NaN where it is undefined)."""
    targets, scores = predictions.targets, predictions.scores
    exact = predictions.value()
    if predictions.multilabel:
        rankings = [_class_ranking(targets[:, c] > 0, scores[:, c]) for c in range(targets.shape[1])]
        if abs(_fast_map(rankings, np.arange(len(scores))[None])[0] - exact) <= _FAST_TOLERANCE:
            return lambda index: _fast_map(rankings, index)
    else:
        correct = (scores.argmax(axis=1) == targets).astype(np.float64)
        if abs(correct.mean() - exact) <= _FAST_TOLERANCE:
            return lambda index: np.take(correct, index).mean(axis=1)

    def one_by_one(index: np.ndarray) -> np.ndarray:
        out = np.full(len(index), np.nan)
        for row, clips in enumerate(index):
            try:
                out[row] = evaluate(targets[clips], scores[clips], predictions.multilabel)[predictions.metric]
            except AsitError:                # a resample where no class has a positive
                pass
        return out

    return one_by_one


def clip_replicates(predictions: Predictions, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The metric on `resamples` bootstrap resamples of the test clips (with replacement), NaN where undefined."""
    _check_arguments(resamples, CONFIDENCE)
    rng, n = np.random.default_rng(seed), len(predictions.scores)
    metric = _resampled_metric(predictions)
    return np.concatenate([metric(rng.integers(0, n, (b, n))) for b in _blocks(resamples, n)])


def bootstrap_interval(values: Sequence[float] | np.ndarray, predictions: Predictions | None = None, *,
                       resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE) -> Interval:
    """Percentile bootstrap interval for a leaderboard cell, in the units of `values` (the runs' metric values).

    n > 1 runs: resample the runs with replacement and take the mean (the cell's number is that mean), so the
    interval covers seed and fold variation. n = 1 with `predictions`: resample that run's test clips and recompute
    the metric, so the interval covers test-set sampling only. n = 1 without: no interval (NaN, basis "")."""
    _check_arguments(resamples, confidence)
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) > 1:
        rng = np.random.default_rng(seed)
        means = np.concatenate([values[rng.integers(0, len(values), (b, len(values)))].mean(axis=1)
                                for b in _blocks(resamples, len(values))])
        return Interval(*_percentiles(means, confidence), "runs")
    if len(values) == 1 and predictions is not None:
        low, high = _percentiles(clip_replicates(predictions, resamples=resamples, seed=seed), confidence)
        return Interval(low, high, "clips") if math.isfinite(low) else Interval(math.nan, math.nan, "")
    return Interval(math.nan, math.nan, "")


# ------------------------------------------------------------------------------------------------- comparisons

@dataclass(frozen=True)
class Comparison:
    """A − B on the paired runs and clips of one task × mode × protocol (percent and percentage points)."""

    a: str
    b: str
    task: str
    mode: str
    protocol: str
    metric: str
    mean_a: float                    # A's metric on the paired clips, averaged over the paired runs (%)
    mean_b: float
    difference: float                # mean_a − mean_b (percentage points)
    ci_low: float                    # percentile interval of the difference over clip resamples (pp)
    ci_high: float
    p_bootstrap: float               # two-sided paired bootstrap p-value
    p_mcnemar: float                 # exact McNemar (accuracy; the largest over seeds), NaN for mAP
    a_only: int | None               # clips A gets right and B wrong, summed over paired runs (accuracy)
    b_only: int | None
    n_runs: int                      # paired (seed, fold) runs
    n_clips: int                     # distinct paired test clips (summed over folds)
    runs_without_predictions: int    # (seed, fold) pairs left out: a side had no usable predictions
    resamples: int


def _fold_key(fold: Any) -> str:
    return "-" if fold is None or (isinstance(fold, float) and math.isnan(fold)) else str(int(fold))


def _unique_first(paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct paths and the row of each one's first occurrence."""
    unique, first = np.unique(paths, return_index=True)
    return unique, first


def bootstrap_p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of "difference = 0" from bootstrap differences: twice the smaller share of replicates on
    either side of 0 (with the +1 of a resampling test), i.e. the inverse of the percentile interval: p < 0.05
    when the 95 % interval excludes 0."""
    replicates = replicates[np.isfinite(replicates)]
    if not len(replicates):
        return math.nan
    below, above = int((replicates <= 0).sum()), int((replicates >= 0).sum())
    return float(min(1.0, 2.0 * (min(below, above) + 1) / (len(replicates) + 1)))


def mcnemar_p_value(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar test on paired per-clip correctness: binomial test of the discordant pairs (A right B wrong
    vs A wrong B right) against 1/2. Returns (p, A-only, B-only); p = 1 without discordant pairs."""
    a_only = int(np.sum(a_correct & ~b_correct))
    b_only = int(np.sum(~a_correct & b_correct))
    if a_only + b_only == 0:
        return 1.0, 0, 0
    return float(binomtest(a_only, a_only + b_only, 0.5).pvalue), a_only, b_only


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = SEED,
                      confidence: float = CONFIDENCE) -> Comparison:
    """Compare encoder A's and B's store rows of one task × mode × protocol on the same runs and test clips.

    Runs are paired by (seed, fold), clips by path. The interval and bootstrap p-value resample the paired clips
    of each fold with replacement — one draw per fold and replicate, shared by A, B and every seed of that fold, so
    a clip is never counted as independent evidence twice — and average the per-run difference over the runs. The
    interval therefore covers test-clip sampling given the trained models, not seed-to-seed training variation."""
    _check_arguments(resamples, confidence)
    if not len(a) or not len(b):
        raise AsitError(f"nothing to compare: {'A' if not len(a) else 'B'} has no runs")
    name_a, name_b = str(a["encoder"].iloc[0]), str(b["encoder"].iloc[0])
    task, mode, protocol = (str(a[c].iloc[0]) for c in ("task", "mode", "protocol"))
    where = f"{task} {mode} [{protocol}]"
    metrics = set(a["metric"]) | set(b["metric"])
    if len(metrics) != 1:
        raise AsitError(f"{name_a} and {name_b} report different metrics on {where}: {', '.join(sorted(metrics))}")
    metric = metrics.pop()
    keyed_a = {(int(r["seed"]), _fold_key(r["fold"])): r for _, r in a.iterrows()}
    keyed_b = {(int(r["seed"]), _fold_key(r["fold"])): r for _, r in b.iterrows()}
    common = sorted(set(keyed_a) & set(keyed_b))
    if not common:
        raise AsitError(f"{name_a} and {name_b} have no run with the same seed and fold on {where} "
                        f"({name_a}: {sorted(keyed_a)}, {name_b}: {sorted(keyed_b)})")
    runs, missing, why = [], 0, {}
    for key in common:
        pa, why[name_a] = row_predictions(keyed_a[key])
        pb, why[name_b] = row_predictions(keyed_b[key])
        if pa is None or pb is None:
            missing += 1
            continue
        runs.append((key, pa, pb))
    if not runs:
        lacking = {name: reason for name, reason in why.items() if reason}
        verb = "has" if len(lacking) == 1 else "have"
        raise AsitError(f"{' and '.join(lacking)} {verb} no usable predictions on {where} "
                        f"({'; '.join(dict.fromkeys(lacking.values()))}): a paired comparison needs the runs' "
                        "predictions.npz")
    # clips of each fold: paths every paired run of that fold has, on both sides
    folds: dict[str, list[tuple[tuple[int, str], Predictions, Predictions]]] = {}
    for run in runs:
        folds.setdefault(run[0][1], []).append(run)
    aligned: list[tuple[str, int, Predictions, Predictions]] = []     # (fold, seed, A, B) on the fold's clips
    sizes: dict[str, int] = {}
    for fold, fold_runs in folds.items():
        shared = None
        for _, pa, pb in fold_runs:
            here = np.intersect1d(pa.paths, pb.paths)
            shared = here if shared is None else np.intersect1d(shared, here)
        if shared is None or not len(shared):
            continue
        sizes[fold] = len(shared)
        for (seed_, _), pa, pb in fold_runs:
            ua, fa = _unique_first(pa.paths)
            ub, fb = _unique_first(pb.paths)
            aligned.append((fold, seed_, pa.take(fa[np.searchsorted(ua, shared)]),
                            pb.take(fb[np.searchsorted(ub, shared)])))
    if not aligned:
        raise AsitError(f"{name_a} and {name_b} share no test clips on {where} (clips are paired by path)")
    values_a = np.array([pa.value() for _, _, pa, _ in aligned])
    values_b = np.array([pb.value() for _, _, _, pb in aligned])
    rng = np.random.default_rng(seed)
    resampled_a = [_resampled_metric(pa) for _, _, pa, _ in aligned]
    resampled_b = [_resampled_metric(pb) for _, _, _, pb in aligned]
    blocks: list[np.ndarray] = []
    for size in _blocks(resamples, max(sizes.values()) * len(aligned)):
        draws = {fold: rng.integers(0, n, (size, n)) for fold, n in sizes.items()}
        diffs = [ra(draws[fold]) - rb(draws[fold])
                 for (fold, _, _, _), ra, rb in zip(aligned, resampled_a, resampled_b)]
        blocks.append(np.mean(diffs, axis=0))
    replicates = 100.0 * np.concatenate(blocks)
    low, high = _percentiles(replicates, confidence)
    p_mcnemar, a_only, b_only = math.nan, None, None
    if metric == "accuracy":
        p_values, a_only, b_only = [], 0, 0
        for seed_ in sorted({s for _, s, _, _ in aligned}):          # folds hold distinct clips: pool them
            pairs = [(pa, pb) for _, s, pa, pb in aligned if s == seed_]
            right_a = np.concatenate([pa.scores.argmax(axis=1) == pa.targets for pa, _ in pairs])
            right_b = np.concatenate([pb.scores.argmax(axis=1) == pb.targets for _, pb in pairs])
            p, only_a, only_b = mcnemar_p_value(right_a, right_b)
            p_values.append(p)
            a_only, b_only = a_only + only_a, b_only + only_b
        p_mcnemar = max(p_values)
    return Comparison(
        a=name_a, b=name_b, task=task, mode=mode, protocol=protocol, metric=metric,
        mean_a=100.0 * float(values_a.mean()), mean_b=100.0 * float(values_b.mean()),
        difference=100.0 * float((values_a - values_b).mean()), ci_low=low, ci_high=high,
        p_bootstrap=bootstrap_p_value(replicates), p_mcnemar=p_mcnemar, a_only=a_only, b_only=b_only,
        n_runs=len(aligned), n_clips=int(sum(sizes.values())), runs_without_predictions=missing, resamples=resamples)


__all__ = ["CONFIDENCE", "Comparison", "Interval", "Predictions", "RESAMPLES", "SEED", "bootstrap_interval",
           "bootstrap_p_value", "clip_replicates", "load_predictions", "mcnemar_p_value", "paired_comparison",
           "row_predictions"]
