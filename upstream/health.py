"""Pretraining health: cheap statistics that reveal a failing run early (collapse, a reconstruction that learns
nothing), their verdict thresholds, and the summaries `asit pretrain` and `asit info` print from a run's logs.

In the step, objectives compute these under `torch.no_grad()` from tensors the step already has (no extra forward
pass) and hand them to `PretrainObjective.record_health`; the Lightning module logs them as `health/<name>` (per step
and per-epoch mean, like the losses). The signals (docs/pretraining.md, "Health signals"):

- `std_*`: mean over dimensions of the batch std of the L2-normalised feature rows, times √D. Rows whose directions
  are spread like an isotropic Gaussian give ≈ 1; rows that are all the same (collapse: the output no longer depends on
  the input) give 0 (SimSiam §4.1 watches the same statistic, unscaled).
- `teacher_entropy_*` / `teacher_entropy_*_ratio`: mean per-row entropy (nats) of a DINO-style teacher's centred,
  sharpened softmax, and its ratio to log K. ≈ 0: one-hot teacher (collapse to one dimension); ≈ 1: uniform
  teacher (collapse to the uniform distribution). Both collapses make the distillation loss trivial.
- `center_norm_*`: the L2 norm of the teacher's EMA center (information only: it grows when the teacher's logits drift
  in one direction).
- `recon_vs_mean*`: L1 of the reconstruction on the reconstructed pixels over the L1 of predicting each sample's mean
  of those pixels. < 1: the reconstruction knows more than the sample's mean; ≈ 1: it learnt nothing beyond it.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .errors import AsitError

ENTROPY_MAX_ROWS = 1024   # rows of [rows, K] probabilities the entropy is estimated on (evenly spaced)


# -- statistics computed in the training step ------------------------------------------------------------------------
@torch.no_grad()
def feature_std(features: torch.Tensor) -> torch.Tensor:
    """Collapse detector: rows [..., D] -> mean over D of the std over rows of the L2-normalised rows, × √D.

    ≈ 1 for isotropically spread rows, 0 when all rows are equal; NaN for fewer than two rows."""
    rows = features.detach().float().reshape(-1, features.shape[-1])
    if rows.shape[0] < 2:
        return torch.tensor(float("nan"), device=rows.device)
    unit = torch.nn.functional.normalize(rows, dim=-1)
    return unit.std(dim=0).mean() * math.sqrt(rows.shape[-1])


@torch.no_grad()
def mean_entropy(probs: torch.Tensor, max_rows: int = ENTROPY_MAX_ROWS) -> torch.Tensor:
    """Mean over rows of H(row) in nats, for probabilities [..., K] the step already computed (e.g. the teacher's
    centred, sharpened softmax the distillation loss used), estimated on at most `max_rows` evenly spaced rows: a
    monitoring statistic, so the p·log p pass stays a small share of the step however many tokens there are."""
    rows = probs.detach().reshape(-1, probs.shape[-1])
    if rows.shape[0] == 0:
        return torch.tensor(float("nan"), device=rows.device)
    p = rows[::math.ceil(rows.shape[0] / max_rows)].float()
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean()


@torch.no_grad()
def recon_vs_mean(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 of `prediction` against `target` over the masked pixels, divided by the L1 of predicting each sample's
    mean of its masked target pixels (dim 0 = samples; mask broadcastable to target). 1 for the mean predictor."""
    target = target.detach().float()
    prediction = prediction.detach().float()
    weight = mask.detach().to(target.dtype).expand_as(target)
    dims = tuple(range(1, target.ndim))
    mean = (target * weight).sum(dim=dims, keepdim=True) / weight.sum(dim=dims, keepdim=True).clamp_min(1.0)
    model = ((prediction - target).abs() * weight).sum()
    baseline = ((mean - target).abs() * weight).sum()
    return model / baseline.clamp_min(1e-12)


# -- verdicts --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HealthRule:
    """A verdict for the signals whose name matches `pattern` (fnmatch): `low_verdict` below `low`, `high_verdict`
    at or above `high`, otherwise "ok"."""

    pattern: str
    low: float | None = None
    low_verdict: str = ""
    high: float | None = None
    high_verdict: str = ""


# The thresholds, in one place (docs/pretraining.md, "Health signals", explains each). A signal no rule matches is
# shown without a verdict.
HEALTH_RULES: tuple[HealthRule, ...] = (
    HealthRule("teacher_entropy_*_ratio", low=0.05, low_verdict="collapsed (one-hot teacher)",
               high=0.98, high_verdict="collapsed (uniform teacher)"),
    HealthRule("std_*", low=0.05, low_verdict="collapsed (output independent of the input)"),
    HealthRule("recon_vs_mean*", high=0.95, high_verdict="not learning (no better than each sample's mean)"),
)


def verdict(name: str, value: float) -> str:
    """The verdict of HEALTH_RULES for signal `name` (without the `health/` prefix) at `value`; "" if none applies."""
    for rule in HEALTH_RULES:
        if fnmatch.fnmatchcase(name, rule.pattern):
            if not math.isfinite(value):
                return "n/a (not finite)"
            if rule.low is not None and value < rule.low:
                return rule.low_verdict
            if rule.high is not None and value >= rule.high:
                return rule.high_verdict
            return "ok"
    return ""


# -- summaries of a run's logs ---------------------------------------------------------------------------------------
def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """All CSV metrics of a run, over its restarts (logs/version_*/metrics.csv), in step order."""
    files = sorted(Path(run_dir).glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not files:
        raise AsitError(f"no logs/version_*/metrics.csv under {run_dir}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


@dataclass(frozen=True)
class SignalSummary:
    name: str        # the logged name without its prefix and _epoch/_step suffix, e.g. loss_global, std_teacher
    first: float     # the first epoch's mean (or first step's value when no epoch finished)
    last: float
    epochs: int      # epochs the values span (0: step values)
    verdict: str = ""

    def values(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {"first": self.first, "last": self.last, "epochs": self.epochs}
        if self.verdict:
            out["verdict"] = self.verdict
        return out


def _series(metrics: pd.DataFrame, column: str) -> tuple[pd.Series, int]:
    """Per-epoch values of `<column>_epoch` (over restarts, the last value per epoch), else the step values."""
    epoch_col = f"{column}_epoch"
    if epoch_col in metrics and metrics[epoch_col].notna().any():
        per_epoch = metrics.dropna(subset=[epoch_col]).groupby("epoch")[epoch_col].last()
        return per_epoch, int(per_epoch.index.max()) + 1
    for name in (f"{column}_step", column):
        if name in metrics and metrics[name].notna().any():
            return metrics[name].dropna(), 0
    return pd.Series(dtype=float), 0


def summarise(metrics: pd.DataFrame, prefix: str, names: tuple[str, ...] | None = None) -> list[SignalSummary]:
    """First and last values of each signal logged under `prefix` (e.g. "train/", "health/"), or of `names`
    (an AsitError names the first missing one). Verdicts from HEALTH_RULES."""
    if names is None:
        found: dict[str, None] = {}
        for column in metrics.columns:
            if column.startswith(prefix):
                found[column[len(prefix):].removesuffix("_epoch").removesuffix("_step")] = None
        names = tuple(found)
    out = []
    for name in names:
        series, epochs = _series(metrics, prefix + name)
        if series.empty:
            raise AsitError(f"logs have no {prefix}{name}_epoch (nor per-step values)")
        first, last = float(series.iloc[0]), float(series.iloc[-1])
        out.append(SignalSummary(name, first, last, epochs, verdict(name, last) if prefix == "health/" else ""))
    return out


def loss_summary(run_dir: str | Path, terms: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """First- and last-epoch mean of each loss term (`terms`, default every train/*_epoch column) from a run's CSV
    logs: {term: {first, last, epochs}}."""
    metrics = read_metrics(run_dir)
    if terms is None:
        terms = tuple(c[len("train/"):-len("_epoch")] for c in metrics.columns
                      if c.startswith("train/") and c.endswith("_epoch"))
    try:
        rows = summarise(metrics, "train/", terms)
    except AsitError as exc:
        raise AsitError(f"{run_dir}: {exc}") from None
    return {r.name: r.values() for r in rows}  # type: ignore[misc]


def health_summary(run_dir: str | Path) -> list[SignalSummary]:
    """Every health/* signal of a run: first and last values and the verdict on the last."""
    return summarise(read_metrics(run_dir), "health/")


def _span(rows: list[SignalSummary]) -> str:
    spans = {r.epochs for r in rows}
    if len(spans) != 1:
        return ""
    epochs = spans.pop()
    return f"epoch 1 -> {epochs}" if epochs else "first -> last step, no epoch finished"


def format_summary(rows: list[SignalSummary], trend: bool = False, indent: str = "  ") -> list[str]:
    """Aligned lines `name: first -> last [trend] [verdict]` (the span in each line when the rows' spans differ);
    `trend` says whether the value fell (for losses)."""
    width = max((len(r.name) for r in rows), default=0)
    per_row = not _span(rows)
    lines = []
    for r in rows:
        line = f"{indent}{r.name:>{width}}: {r.first:10.4g} -> {r.last:10.4g}"
        if per_row:
            line += f" ({_span([r])})"
        if trend:
            line += "  fell" if r.last < r.first else "  did not fall"
        if r.verdict:
            line += f"  {r.verdict}"
        lines.append(line)
    return lines


def run_report(run_dir: str | Path) -> list[str]:
    """The loss and health summary of a run, as printed at the end of `asit pretrain` and by `asit info`."""
    metrics = read_metrics(run_dir)
    losses = [r for r in summarise(metrics, "train/") if r.epochs]   # scheduled values (lr, …) have no epoch mean
    lines = []
    if losses:
        lines += [f"losses (epoch mean, {_span(losses) or 'first -> last'}):", *format_summary(losses, trend=True)]
    health = summarise(metrics, "health/")
    if health:
        lines += [f"health ({_span(health) or 'first -> last'}; verdict on the last value):", *format_summary(health)]
    return lines or [f"no loss or health values logged yet under {run_dir}"]


__all__ = ["ENTROPY_MAX_ROWS", "HEALTH_RULES", "HealthRule", "SignalSummary", "feature_std", "format_summary",
           "health_summary", "loss_summary", "mean_entropy", "read_metrics", "recon_vs_mean", "run_report",
           "summarise", "verdict"]
