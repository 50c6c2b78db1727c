"""Leaderboards from results stores: mean ± std over seeds and folds, our rows beside the paper's quoted rows.

One column per (task, protocol): a number is only ever compared with numbers measured under the same protocol
(ESC-50 train-4/test-1 and HEAR's 3/1/1 are different columns). Rows are (model, pretraining data, mode, source);
the mode says whether the encoder was finetuned or frozen. Quoted rows come from benchmarks/reference.yaml.

Every measured cell also carries a 95 % percentile-bootstrap interval (benchmarks/stats.py): over the runs when
n > 1, over the test clips of the run's saved predictions when n = 1, none otherwise. Floors — the fbank-statistics
baseline and random-init twins — are marked in the `Kind` column and listed right after the pretrained rows.

Outputs (`write_leaderboard`): leaderboard.md, leaderboard.csv (the same wide table), leaderboard_long.csv (one
numeric row per model × mode × task × protocol: mean, std, interval, n, seeds, folds), leaderboard.tex and
leaderboard.png. `write_comparison` writes compare_<A>_vs_<B>.csv/.md: paired differences of two encoders.

Audit fields (docs/benchmarks.md): finetune cells show the test score at the best-valid epoch or at the last one
(`epoch`, `select_epoch`); every column lists the data fingerprint its rows saw and flags one whose rows saw different
data; the `Cost` column sums the rows' recorded compute (wall time, encoder forwards).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
import pandas as pd
import yaml

from tasks.api import TASKS
from upstream.atomic import atomic_write, atomic_write_text
from upstream.errors import AsitError

from .results import ResultsStore
from .stats import RESAMPLES, SEED, Comparison, bootstrap_interval, paired_comparison, row_predictions

REFERENCE_FILE = Path(__file__).parent / "reference.yaml"
TASK_LABELS = {"as2m": "AS-2M", "as20k": "AS-20K", "esc50": "ESC-50", "speechcommands_v2": "SC-V2",
               "speechcommands_v1": "SC-V1", "voxceleb1": "SID"}
METRIC_LABELS = {"accuracy": "acc", "mAP": "mAP"}
SMOKE_MODE = "hear-smoke"
MODE_LABELS = {"finetune": "finetune", "probe": "probe (frozen)", "hear": "HEAR MLP (frozen)",
               SMOKE_MODE: "HEAR MLP (frozen), smoke test",
               "s3prl-frozen": "s3prl frozen", "s3prl-finetune": "s3prl finetuned"}
OURS = "ours"
PRETRAINED, FLOOR_FBANK, FLOOR_RANDOM = "pretrained", "floor: fbank stats", "floor: random init"
KIND_ORDER = {PRETRAINED: 0, FLOOR_FBANK: 1, FLOOR_RANDOM: 2}      # floors listed right after the pretrained rows
FBANK_ARCH = "fbank_stats"
INDEX = ["Model", "Kind", "Pretraining", "Mode", "Source"]
AUDIT_COLUMNS = ["epoch", "data", "data_clips", "data_missing", "data_unrecorded", "wall_s", "encoder_forwards",
                 "peak_memory_mb", "device", "precision", "cost_unrecorded"]
LONG_COLUMNS = ["source", "model", "kind", "pretraining", "mode", "task", "protocol", "metric", "mean", "std",
                "ci_low", "ci_high", "ci_basis", "n", "seeds", "folds", *AUDIT_COLUMNS]
AGGREGATE_COLUMNS = ["encoder", "kind", "pretraining", "init", "task", "mode", "protocol", "metric", "mean", "std",
                     "ci_low", "ci_high", "ci_basis", "n", "seeds", "folds", *AUDIT_COLUMNS]
EPOCHS = ("best", "last")
COST_COLUMN = "Cost"
FLAG = "⚠ "                               # prefix of a column whose rows saw different data


# ------------------------------------------------------------------------------------------------------ reading

def store_files(paths: Sequence[str | Path]) -> list[Path]:
    """Result files named directly, or every *.jsonl inside a named folder."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.rglob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise AsitError(f"results {path} does not exist")
    return files


def load_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The successful rows of every store, one per cell key (the first store wins if two hold the same cell)."""
    frames = [ResultsStore(f).successes() for f in store_files(paths)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["key", "encoder", "task", "mode", "protocol", "seed", "fold", "metric", "value"])
    return pd.concat(frames, ignore_index=True).drop_duplicates("key", keep="first").reset_index(drop=True)


def _arch(extra: Any) -> str:
    return str(extra.get("encoder_arch") or "") if isinstance(extra, dict) else ""


def _extra(extra: Any, *path: str) -> Any:
    """extra[path[0]][path[1]]…, or None where a level is missing (older rows, HEAR and s3prl rows)."""
    for name in path:
        if not isinstance(extra, dict):
            return None
        extra = extra.get(name)
    return extra


def probe_protocol(mode: Any, extra: Any) -> str:
    """` · knn`, ` · mlp`, ` · 5-shot logistic`: what a probe row's classifier and few-shot setting add to its mode;
    "" for the default full-data logistic probe and for rows that record neither (older rows, other modes)."""
    if mode != "probe" or not isinstance(extra, dict):
        return ""
    classifier, shots = str(extra.get("classifier") or "logistic"), int(extra.get("shots") or 0)
    if classifier == "logistic" and not shots:
        return ""
    return " · " + (f"{shots}-shot " if shots else "") + classifier


def select_epoch(rows: pd.DataFrame, epoch: str = "best") -> pd.DataFrame:
    """Finetune rows at the epoch asked for: `best` = the best-valid epoch where the recipe selected on a valid split,
    else the last (there is no best without one); `last` = the last epoch. Each such row's value and predictions
    become that epoch's (`extra.epoch_scores`); `epoch` says which a row shows ("" for rows without epochs: probes,
    HEAR, s3prl, finetune rows stored before both were kept)."""
    if epoch not in EPOCHS:
        raise AsitError(f"--epoch must be one of {', '.join(EPOCHS)}, not {epoch!r}")
    rows = rows.copy()
    if "extra" not in rows:
        rows["extra"] = None
    values, extras, shown = [], [], []
    for value, extra in zip(rows["value"], rows["extra"]):
        scores = _extra(extra, "epoch_scores")
        entry_name = epoch if isinstance(scores, dict) and epoch in scores else "last"
        entry = scores.get(entry_name) if isinstance(scores, dict) else None
        if not isinstance(entry, dict) or entry.get("value") is None:
            values.append(value)
            extras.append(extra)
            shown.append(str(_extra(extra, "reported_epoch") or ""))
            continue
        values.append(float(entry["value"]))
        extras.append({**extra, "predictions": entry.get("predictions")})
        shown.append(entry_name)
    return rows.assign(value=values, extra=extras, epoch=shown)


def smoke_tests(rows: pd.DataFrame) -> pd.Series:
    """HEAR rows scored with one of heareval's reduced grids (`fast`, `faster`: benchmarks.hear_results): smoke tests
    of the pipeline, not measurements. Rows stored before `extra.smoke_test` existed are judged by their `hparams`."""
    def smoke(mode: Any, extra: Any) -> bool:
        if mode != "hear":
            return False
        marked = _extra(extra, "smoke_test")
        if marked is not None:
            return bool(marked)
        from .hear_results import BENCHMARK_GRID, UNKNOWN_GRID, heareval_grid    # heareval, only for old rows

        grid = heareval_grid(_extra(extra, "hparams"))
        return grid not in (BENCHMARK_GRID, UNKNOWN_GRID)

    extras = rows["extra"] if "extra" in rows else pd.Series([None] * len(rows), index=rows.index)
    return pd.Series([smoke(m, e) for m, e in zip(rows["mode"], extras)], index=rows.index, dtype=bool)


def label_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Store rows as the table names them: HEAR smoke tests (`smoke_tests`) get their own mode, `hear-smoke`;
    `encoder` becomes `name@sha8` when one name was used with two encoder identities (`checkpoint_sha256`: weights
    + config; rows stored before that identity carry the file's bytes) — for a suite-pretrained encoder
    (`pretrain_run`), one seed with two, since each seed is its own pretraining; `mode` becomes
    `mode · recipe <digest6>` when one encoder × task × mode ran two resolved recipes (the given names stay in
    `encoder_name`, `base_mode`), after a probe's classifier and few-shot setting (`probe_protocol`: kNN, MLP and
    few-shot probes are never shown as, or averaged with, the logistic probe); and `kind` says whether a row is a
    floor: the fbank-statistics baseline (`extra.encoder_arch` or `init` = fbank_stats, for every row of that
    encoder) or a random-init twin."""
    rows = rows.copy()
    for name, default in (("pretraining", ""), ("init", "pretrained"), ("checkpoint_sha256", ""),
                          ("recipe_digest", ""), ("pretrain_run", "")):
        if name not in rows:
            rows[name] = default
        rows[name] = rows[name].fillna(default)
    if "extra" not in rows:
        rows["extra"] = None
    rows["mode"] = rows["mode"].where(~smoke_tests(rows), SMOKE_MODE)
    rows["encoder_name"], rows["base_mode"] = rows["encoder"], rows["mode"]
    # a suite-pretrained encoder is one checkpoint per seed by design: it splits only when a seed has two
    per_seed = rows["pretrain_run"].astype(str) != ""
    unit = rows["encoder"] + np.where(per_seed, " #seed " + rows["seed"].astype(str), "")
    shas = rows.groupby(unit)["checkpoint_sha256"].transform("nunique")
    shas = shas.groupby(rows["encoder"]).transform("max")
    rows["encoder"] = rows["encoder"].where(shas <= 1, rows["encoder"] + "@" + rows["checkpoint_sha256"].str[:8])
    rows["mode"] = rows["mode"] + [probe_protocol(m, e) for m, e in zip(rows["base_mode"], rows["extra"])]
    recipes = rows.groupby(["encoder", "task", "mode", "protocol"])["recipe_digest"].transform("nunique")
    rows["mode"] = rows["mode"].where(recipes <= 1, rows["mode"] + " · recipe " + rows["recipe_digest"].str[:6])
    fbank = pd.Series([_arch(e) == FBANK_ARCH for e in rows["extra"]], index=rows.index) | (rows["init"] == FBANK_ARCH)
    fbank = fbank.groupby(rows["encoder"]).transform("any")
    rows["kind"] = np.where(fbank, FLOOR_FBANK, np.where(rows["init"] == "scratch", FLOOR_RANDOM, PRETRAINED))
    rows["fold_key"] = rows["fold"].astype("string").fillna("-")
    return rows


def aggregate(rows: pd.DataFrame, *, intervals: bool = False, resamples: int = RESAMPLES,
              seed: int = SEED) -> pd.DataFrame:
    """Mean and sample std (ddof=1) of the value in percent over every seed × fold cell of an encoder × task × mode
    × protocol; `n` counts the cells, `seeds` and `folds` the distinct ones. With `intervals` (the leaderboard's
    long table; off by default so that a suite's summary never pays for clip bootstraps): `ci_low`/`ci_high`
    (percent), the 95 % interval of `bootstrap_interval` (over runs for n > 1, over the test clips of saved
    predictions for n = 1), and `ci_basis`, which one ("runs", "clips", or "none (<why>)"). Runs are never averaged
    across checkpoints or recipes (see `label_rows`)."""
    if rows is None or not len(rows):
        return pd.DataFrame(columns=AGGREGATE_COLUMNS)
    rows = label_rows(rows)
    records = []
    keys = ["encoder", "kind", "pretraining", "init", "task", "mode", "protocol", "metric"]
    for key, group in rows.groupby(keys, sort=False, dropna=False):
        values = group["value"].astype(float).to_numpy()
        record = dict(zip(keys, key), mean=100.0 * values.mean(), std=100.0 * values.std(ddof=1) if len(values) > 1
                      else float("nan"), n=len(values), seeds=group["seed"].nunique(),
                      folds=group["fold_key"].nunique())
        low = high = float("nan")
        basis = "not computed"
        if intervals:
            predictions, why = (row_predictions(group.iloc[0]) if len(values) == 1 else (None, ""))
            interval = bootstrap_interval(values, predictions, resamples=resamples, seed=seed)
            low, high = 100.0 * interval.low, 100.0 * interval.high
            basis = interval.basis or f"none ({why or 'undefined on resamples'})"
        records.append({**record, "ci_low": low, "ci_high": high, "ci_basis": basis, **audit_fields(group)})
    return pd.DataFrame(records, columns=AGGREGATE_COLUMNS)


def _joined(values: Any) -> str:
    return ",".join(sorted({str(v) for v in values if v not in (None, "") and not pd.isna(v)}))


def audit_fields(group: pd.DataFrame) -> dict[str, Any]:
    """What one table cell's runs saw and cost: the epochs shown, the data fingerprints (digests, joined; clips and
    missing clips of the first; rows without one), and the compute summed over runs (wall time, encoder forwards),
    the largest peak memory, devices and precisions (rows without a compute record counted)."""
    extras = list(group["extra"]) if "extra" in group else [None] * len(group)
    prints = [_extra(e, "data_fingerprint") for e in extras]
    recorded = [p for p in prints if isinstance(p, dict) and p.get("digest")]
    compute = [c for c in (_extra(e, "compute") for e in extras) if isinstance(c, dict)]

    def total(name: str) -> float:
        numbers = [float(c[name]) for c in compute if isinstance(c.get(name), (int, float))]
        return float(sum(numbers)) if numbers else float("nan")

    clips = _extra(recorded[0], "clips") if recorded else None
    peaks = [float(c["peak_memory_mb"]) for c in compute if isinstance(c.get("peak_memory_mb"), (int, float))]
    return {
        "epoch": _joined(group["epoch"]) if "epoch" in group else "",
        "data": _joined(p["digest"] for p in recorded),
        "data_clips": float(sum(clips.values())) if isinstance(clips, dict) else float("nan"),
        "data_missing": float(recorded[0].get("missing", 0) or 0) if recorded else float("nan"),
        "data_unrecorded": len(prints) - len(recorded),
        "wall_s": total("wall_s"), "encoder_forwards": total("encoder_forwards"),
        "peak_memory_mb": max(peaks) if peaks else float("nan"),
        "device": _joined(c.get("device") for c in compute), "precision": _joined(c.get("precision") for c in compute),
        "cost_unrecorded": len(extras) - len(compute),
    }


def load_reference(path: str | Path = REFERENCE_FILE) -> pd.DataFrame:
    """Quoted rows in the long format (mean in percent, std/interval/n empty; a quoted "none (scratch)" pretraining
    is a random-init floor)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AsitError(f"reference file {path} cannot be read ({exc.__class__.__name__})") from None
    protocols, metrics = data.get("protocols", {}), data.get("metrics", {})
    records = []
    for row in data.get("rows", []):
        for task, value in row["values"].items():
            if task not in protocols or task not in metrics:
                raise AsitError(f"reference file {path}: task {task} has no protocol or metric")
            kind = FLOOR_RANDOM if str(row["pretraining"]).startswith("none") else PRETRAINED
            records.append({"source": f"quoted: {row.get('citation', data['citation'])}", "model": row["model"],
                            "kind": kind, "pretraining": row["pretraining"], "mode": row["mode"], "task": task,
                            "protocol": protocols[task], "metric": metrics[task], "mean": float(value),
                            "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "ci_basis": "",
                            "n": float("nan"), "seeds": float("nan"), "folds": float("nan"),
                            **QUOTED_AUDIT})
    return pd.DataFrame(records, columns=LONG_COLUMNS)


# quoted rows record none of the audit fields
QUOTED_AUDIT = {"epoch": "", "data": "", "data_clips": float("nan"), "data_missing": float("nan"),
                "data_unrecorded": 0, "wall_s": float("nan"), "encoder_forwards": float("nan"),
                "peak_memory_mb": float("nan"), "device": "", "precision": "", "cost_unrecorded": 0}


def long_table(results: pd.DataFrame, reference: pd.DataFrame | None = None, *, resamples: int = RESAMPLES,
               seed: int = SEED) -> pd.DataFrame:
    """Ours (aggregated, with intervals) + quoted rows; quoted rows are kept only for (task, protocol) columns we
    measured, unless nothing was measured at all."""
    agg = aggregate(results, intervals=True, resamples=resamples, seed=seed)
    ours = agg.rename(columns={"encoder": "model"}).assign(
        source=OURS, pretraining=agg["pretraining"].replace("", "unspecified"))[LONG_COLUMNS]
    if reference is not None and len(reference):
        if len(ours):
            measured = set(zip(ours["task"], ours["protocol"]))
            reference = reference[[pair in measured for pair in zip(reference["task"], reference["protocol"])]]
        frames = [f for f in (reference, ours) if len(f)]
        table = pd.concat(frames, ignore_index=True) if frames else ours
    else:
        table = ours
    return table.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------ shaping

def column_label(task: str, metric: str, protocol: str) -> str:
    return f"{TASK_LABELS.get(task, task)} {METRIC_LABELS.get(metric, metric)} [{protocol}]"


def _task_order(task: str) -> tuple[int, str]:
    order = ["as2m", *TASKS]
    return (order.index(task), task) if task in order else (len(order), task)


def _mode_label(mode: str) -> str:
    base, sep, rest = mode.partition(" · ")
    return MODE_LABELS.get(base, base) + sep + rest


def format_cell(mean: float, std: float, n: float, pm: str = "±", ci_low: float = float("nan"),
                ci_high: float = float("nan")) -> str:
    """`71.2 ± 3.1 [66.0, 76.1] (n=5)`: mean ± std, the 95 % interval when there is one, the number of runs."""
    if pd.isna(mean):
        return "—"
    if pd.isna(n):                       # quoted: the number as printed
        return f"{mean:.1f}"
    text = f"{mean:.1f} {pm} {std:.1f}" if n > 1 and not pd.isna(std) else f"{mean:.1f}"
    if not pd.isna(ci_low) and not pd.isna(ci_high):
        text += f" [{ci_low:.1f}, {ci_high:.1f}]"
    return f"{text} (n={int(n)})"


def _row_order(rows: pd.DataFrame) -> pd.DataFrame:
    """Quoted rows first (as printed in their sources), then ours: pretrained rows, then the floors together
    (fbank statistics, then random init), each block by model and mode; smoke tests last, apart from them all. Our
    pretrained rows are grouped by their pretraining text first, which names the objective first where a suite
    pretrained the encoder (benchmarks/suite_pretrain.py), a head-to-head lists each objective's variants together."""
    kind = rows["Kind"].map(KIND_ORDER).fillna(len(KIND_ORDER)).where(rows["Source"] == OURS, -1)
    kind = kind.where(rows["Mode"] != MODE_LABELS[SMOKE_MODE], len(KIND_ORDER) + 1)
    text = rows["Pretraining"].astype(str) if "Pretraining" in rows else pd.Series("", index=rows.index)
    group = text.where(kind == KIND_ORDER[PRETRAINED], "")
    return rows.assign(_kind=kind, _group=group, _mode=rows["Mode"]).sort_values(["_kind", "_group", "Model", "_mode"])


def wide_table(long: pd.DataFrame, pm: str = "±", *, cost: bool = True) -> pd.DataFrame:
    """The leaderboard: one row per (model, pretraining, mode, source), one column per (task, metric, protocol),
    flagged `⚠` when its rows saw different data (`data_mismatches`), and, with `cost`, the row's `Cost` (when any
    run recorded its compute)."""
    if not len(long):
        return pd.DataFrame(columns=INDEX)
    frame = long.copy()
    frame["Model"] = frame["model"]
    frame["Kind"] = frame["kind"] if "kind" in frame else PRETRAINED
    frame["Pretraining"] = frame["pretraining"]
    frame["Mode"] = frame["mode"].map(_mode_label)
    frame["Source"] = frame["source"]
    frame["column"] = [column_label(t, m, p) for t, m, p in zip(frame["task"], frame["metric"], frame["protocol"])]
    for name in ("ci_low", "ci_high"):
        if name not in frame:
            frame[name] = float("nan")
    frame["cell"] = [format_cell(m, s, n, pm, lo, hi) for m, s, n, lo, hi in zip(
        frame["mean"], frame["std"], frame["n"], frame["ci_low"], frame["ci_high"])]
    mixed = set(data_mismatches(frame))
    frame["column"] = [FLAG + c if c in mixed else c for c in frame["column"]]
    order = (frame.assign(_task=[_task_order(t) for t in frame["task"]])
             .sort_values(["_task", "protocol"])["column"].drop_duplicates().tolist())
    wide = frame.pivot_table(index=INDEX, columns="column", values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(columns=order).fillna("—")
    rows = _row_order(frame[INDEX].drop_duplicates())
    wide = wide.reindex(pd.MultiIndex.from_frame(rows[INDEX])).reset_index()
    wide.columns.name = None
    if cost and "wall_s" in frame and frame["wall_s"].astype(float).notna().any():
        costs = {tuple(key): cost_text(group) for key, group in frame.groupby(INDEX, sort=False)}
        wide[COST_COLUMN] = [costs.get(tuple(key), "—") for key in wide[INDEX].itertuples(index=False)]
    return wide


def _ours(long: pd.DataFrame) -> pd.DataFrame:
    return long[long["source"] == OURS] if len(long) and "source" in long else long.iloc[0:0]


def data_mismatches(long: pd.DataFrame) -> dict[str, dict[str, list[str]]]:
    """Columns whose measured rows saw more than one data fingerprint: column label -> digest -> the models (with
    mode) that saw it. Rows without a fingerprint are not counted here (the legend counts them)."""
    out: dict[str, dict[str, list[str]]] = {}
    ours = _ours(long)
    if not len(ours) or "data" not in ours:
        return out
    for (task, metric, protocol), group in ours.groupby(["task", "metric", "protocol"], sort=False):
        seen: dict[str, list[str]] = {}
        for model, mode, digests in zip(group["model"], group["mode"], group["data"]):
            for digest in filter(None, str(digests or "").split(",")):
                seen.setdefault(digest, []).append(f"{model} ({_mode_label(mode)})")
        if len(seen) > 1:
            out[column_label(task, metric, protocol)] = seen
    return out


def _duration(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3 * 3600 else f"{seconds / 3600:.1f} h"


def _count(number: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= scale:
            return f"{number / scale:.1f}{suffix}"
    return f"{number:.0f}"


def cost_text(cells: pd.DataFrame) -> str:
    """A leaderboard row's cost: wall time and encoder forwards (chunks) summed over its cells' runs; "—" when no
    run of the row recorded its compute (quoted, HEAR and s3prl rows, rows stored before compute was recorded), and
    a `+` when some did not."""
    wall = cells["wall_s"].astype(float)
    if not wall.notna().any():
        return "—"
    forwards = cells["encoder_forwards"].astype(float)
    text = f"{_duration(float(wall.sum()))}"
    if forwards.notna().any() and float(forwards.sum()) > 0:
        text += f", {_count(float(forwards.sum()))} fwd"
    partial = wall.isna().any() or cells["cost_unrecorded"].fillna(0).astype(int).sum() > 0
    return text + ("+" if partial else "")


# ------------------------------------------------------------------------------------------------------ writing

@dataclass
class LeaderboardFiles:
    markdown: Path
    csv: Path
    long_csv: Path
    latex: Path
    png: Path
    text: str                            # the Markdown table
    audit: str = ""                      # the legend's audit part: epochs shown, data fingerprints, cost


def to_markdown(wide: pd.DataFrame) -> str:
    return wide.to_markdown(index=False)


def to_latex(long: pd.DataFrame, caption: str = "Leaderboard") -> str:
    wide = wide_table(long, pm=r"$\pm$")
    values = [c for c in wide.columns if c not in INDEX]
    styler = wide.style.hide(axis="index").format_index(escape="latex", axis=1)
    styler = styler.format(escape="latex", subset=INDEX)
    styler = styler.format(lambda cell: cell.replace("(n=", "($n$="), subset=values)
    latex = styler.to_latex(hrules=True, caption=caption, label="tab:leaderboard", position="t",
                            column_format="l" * len(INDEX) + "r" * len(values))
    return latex.replace("→", r"$\rightarrow$").replace("—", "--").replace(FLAG.strip(), r"$\dagger$")


def _tick_label(column: str, width: int = 20) -> str:
    """`task metric [protocol]` on several short lines (protocols break after '/'), so neighbours never overlap."""
    head, _, protocol = column.partition(" [")
    lines, line = [head], "["
    for part in (protocol.rstrip("]") + "]").split("/"):
        piece = part if line == "[" else f"/{part}"
        if len(line) + len(piece) > width and line != "[":
            lines.append(line + "/")
            line = part
        else:
            line += piece
    return "\n".join(lines + [line])


def plot(long: pd.DataFrame, path: Path, title: str = "Leaderboard") -> Path:
    """Grouped bars: one group per (task, protocol) column, one bar per leaderboard row, std as error bars;
    quoted rows hatched //, floors hatched .. and named so in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = long.copy()
    frame["column"] = [column_label(t, m, p) for t, m, p in zip(frame["task"], frame["metric"], frame["protocol"])]
    if "kind" not in frame:
        frame["kind"] = PRETRAINED
    frame["entry"] = [f"{m} · {p} · {_mode_label(d)}" + ("" if s == OURS else " (quoted)")
                      + ("" if k == PRETRAINED else f" [{k}]")
                      for m, p, d, s, k in zip(frame["model"], frame["pretraining"], frame["mode"], frame["source"],
                                               frame["kind"])]
    columns = (frame.assign(_task=[_task_order(t) for t in frame["task"]])
               .sort_values(["_task", "protocol"])["column"].drop_duplicates().tolist())
    entries = frame.drop_duplicates("entry")
    entries = _row_order(entries.assign(Source=entries["source"], Kind=entries["kind"], Model=entries["model"],
                                        Mode=entries["mode"].map(_mode_label), Pretraining=entries["pretraining"]))
    width = 0.8 / max(1, len(entries))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(columns) + 2.5), 4.8))
    cmap = plt.get_cmap("tab10")
    for i, (_, entry) in enumerate(entries.iterrows()):
        cells = frame[frame["entry"] == entry["entry"]].set_index("column")
        means = [cells["mean"].get(c, float("nan")) for c in columns]
        stds = [cells["std"].get(c, float("nan")) for c in columns]
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(columns))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, color=cmap(i % 10),
               hatch="//" if entry["source"] != OURS else (".." if entry["kind"] != PRETRAINED else None),
               edgecolor="black", linewidth=0.4,
               label=entry["entry"])
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([_tick_label(c) for c in columns], fontsize=7)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_write(path) as handle:
            fig.savefig(handle, dpi=150, format="png")
    finally:
        plt.close(fig)
    return path


def write_leaderboard(results: Sequence[str | Path], out_dir: str | Path, *, reference: bool = True,
                      title: str = "Leaderboard", keys: Collection[str] | None = None, resamples: int = RESAMPLES,
                      seed: int = SEED, epoch: str = "best") -> LeaderboardFiles:
    """Read the stores, build the tables and write all five files into `out_dir`. `keys`: only these cells (e.g.
    one suite's grid, leaving out rows of earlier versions of its recipes that the same store still holds);
    `resamples`, `seed`: of the bootstrap intervals; `epoch`: which finetune epoch the cells show (`select_epoch`)."""
    rows = load_results(results)
    if keys is not None:
        rows = rows[rows["key"].isin(set(keys))]
    if not len(rows):
        raise AsitError(f"no successful results in {', '.join(map(str, results))}")
    long = long_table(select_epoch(rows, epoch), load_reference() if reference else None, resamples=resamples,
                      seed=seed)
    return write_tables(long, out_dir, title=title, failed=count_failed(results, keys), resamples=resamples,
                        epoch=epoch)


def count_failed(paths: Sequence[str | Path], keys: Collection[str] | None = None) -> int:
    """Cells whose every run failed (they are not in the table; their rows hold the errors)."""
    frames = [ResultsStore(f).latest() for f in store_files(paths)]
    failed = {k for f in frames for k, s in zip(f["key"], f["status"]) if s != "ok"}
    ok = {k for f in frames for k, s in zip(f["key"], f["status"]) if s == "ok"}
    return len((failed - ok) & set(keys)) if keys is not None else len(failed - ok)


def legend(long: pd.DataFrame, *, failed: int = 0, resamples: int = RESAMPLES) -> str:
    """What the cells, intervals and kinds mean, and which cells have no interval and why."""
    text = ("\n\nCells: mean ± sample std over seeds × folds in %, [95 % percentile-bootstrap interval, "
            f"{resamples} resamples], n = number of runs. The interval is over runs (resampled seeds × folds, "
            "mean) when n > 1, and over test clips (the metric recomputed on resampled clips of the run's saved "
            "predictions) when n = 1; an n = 1 cell without usable predictions has none. Quoted rows are as "
            "printed in their source. Columns are task, metric [protocol]: numbers in one column share a protocol. "
            f"Kind: `{PRETRAINED}`, or a floor listed right after them — `{FLOOR_FBANK}` (per-band fbank mean + std, "
            f"no weights) or `{FLOOR_RANDOM}` (the same architecture, untrained).\n")
    ours = long[long["source"] == OURS] if len(long) else long
    if len(ours) and (ours["mode"] == SMOKE_MODE).any():
        text += (f"\n`{MODE_LABELS[SMOKE_MODE]}`: HEAR rows scored with one of heareval's reduced grids (`--grid fast` "
                 "or `faster`: at most 10–50 epochs, often the epoch-0 model on small sets) — a check that the "
                 "pipeline runs, not a measurement; listed last and left out of `--compare`. heareval's default "
                 "grid is the HEAR protocol.\n")
    missing = ours[ours["ci_basis"].astype(str).str.startswith("none")] if len(ours) else ours
    if len(missing):
        reasons = missing["ci_basis"].str.extract(r"none \((.*)\)")[0].value_counts()
        listed = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
        text += (f"\n{len(missing)} n = 1 cell(s) have no interval ({listed}); rows written before predictions "
                 "were saved, and HEAR and s3prl rows, have none.\n")
    if failed:
        text += f"\n{failed} cell(s) failed in every run and are not in the table (their errors are in the store).\n"
    return text


def audit_legend(ours: pd.DataFrame, epoch: str = "best") -> str:
    """Which epoch the finetune cells show, the data each column saw (its fingerprint, or the models that saw which
    when they differ) and what the Cost column sums."""
    if not len(ours) or "data" not in ours:
        return ""
    text = ""
    shown = ours[ours["epoch"].astype(str) != ""] if "epoch" in ours else ours.iloc[0:0]
    if len(shown):
        by_epoch = {name: sorted({column_label(t, m, p) for t, m, p, e in zip(
            shown["task"], shown["metric"], shown["protocol"], shown["epoch"]) if name in str(e).split(",")})
            for name in EPOCHS}
        asked = ("the best-valid epoch where the recipe selects on a valid split, else the last epoch"
                 if epoch == "best" else "the last epoch")
        text += (f"\nFinetune cells show the test score at {asked} (`asit table --epoch {epoch}`; both are stored): "
                 + "; ".join(f"{name} in {', '.join(cols)}" for name, cols in by_epoch.items() if cols) + ".\n")
    mismatches = data_mismatches(ours)
    lines = []
    for (task, metric, protocol), group in ours.groupby(["task", "metric", "protocol"], sort=False):
        label = column_label(task, metric, protocol)
        unrecorded = int(group["data_unrecorded"].fillna(0).sum())
        missing_note = f"; {unrecorded} run(s) recorded no fingerprint" if unrecorded else ""
        if label in mismatches:
            seen = "; ".join(f"{digest} by {', '.join(models)}" for digest, models in mismatches[label].items())
            lines.append(f"- {FLAG}{label}: DIFFERENT DATA — {seen}{missing_note}; these rows are not comparable")
            continue
        digests = sorted({d for ds in group["data"] for d in str(ds or "").split(",") if d})
        if not digests:
            lines.append(f"- {label}: no fingerprint recorded")
            continue
        first = group[group["data"].astype(str) != ""].iloc[0]
        clips = "" if pd.isna(first["data_clips"]) else f", {int(first['data_clips'])} clips"
        missing = ("" if pd.isna(first["data_missing"]) else f", {int(first['data_missing'])} listed clip(s) "
                   "missing or unreadable")
        lines.append(f"- {label}: {digests[0]}{clips}{missing}{missing_note}")
    text += ("\nData each column's rows saw (fingerprint: clip names, sizes, labels, splits and SHA-256 of the "
             "audio bytes):\n" + "\n".join(lines) + "\n")
    devices = sorted({d for ds in ours["device"] for d in str(ds or "").split(",") if d})
    precisions = sorted({d for ds in ours["precision"] for d in str(ds or "").split(",") if d})
    text += ("\nCost: wall time and encoder forwards (chunks) summed over a row's runs; `+`: some runs recorded no "
             "compute (HEAR and s3prl rows, older rows). Devices: " + (", ".join(devices) or "not recorded")
             + "; precision: " + (", ".join(precisions) or "not recorded") + ".\n")
    return text


def output_folder(out_dir: str | Path) -> Path:
    """`out_dir`, created if needed; one line naming it when it cannot be (a file there, a read-only parent)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AsitError(f"output folder {out} is a file; --out names the folder the tables are written into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AsitError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    return out


def write_tables(long: pd.DataFrame, out_dir: str | Path, *, title: str = "Leaderboard",
                 failed: int = 0, resamples: int = RESAMPLES, epoch: str = "best") -> LeaderboardFiles:
    out = output_folder(out_dir)
    wide = wide_table(long)
    text = to_markdown(wide)
    audit = audit_legend(_ours(long), epoch)
    legend_text = legend(long, failed=failed, resamples=resamples) + audit
    files = LeaderboardFiles(markdown=out / "leaderboard.md", csv=out / "leaderboard.csv",
                             long_csv=out / "leaderboard_long.csv", latex=out / "leaderboard.tex",
                             png=out / "leaderboard.png", text=text, audit=audit)
    atomic_write_text(files.markdown, f"# {title}\n\n{text}{legend_text}")
    atomic_write_text(files.csv, wide.to_csv(index=False))
    atomic_write_text(files.long_csv, long.to_csv(index=False))
    atomic_write_text(files.latex, to_latex(long, caption=title))
    plot(long, files.png, title=title)
    return files


# ------------------------------------------------------------------------------------------------- comparisons

COMPARE_COLUMNS = ["task", "mode", "protocol", "metric", "a", "b", "mean_a", "mean_b", "difference", "ci_low",
                   "ci_high", "p_bootstrap", "p_mcnemar", "a_only", "b_only", "n_runs", "n_clips",
                   "runs_without_predictions", "resamples"]


@dataclass
class ComparisonFiles:
    csv: Path
    markdown: Path
    table: pd.DataFrame                  # one row per compared column (COMPARE_COLUMNS)
    text: str                            # the Markdown table, notes and legend


def _select_encoder(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    """The labelled rows of encoder `name`, as the table names it (`name`, or `name@sha8` — any checkpoint-hash
    prefix after the @)."""
    hit = rows[rows["encoder"] == name]
    if not len(hit) and "@" in name:
        base, _, sha = name.rpartition("@")
        if sha:
            hit = rows[(rows["encoder_name"] == base) & rows["checkpoint_sha256"].astype(str).str.startswith(sha)]
    if len(hit):
        return hit
    split = sorted(set(rows.loc[rows["encoder_name"] == name, "encoder"]))
    if split:
        raise AsitError(f"encoder {name!r} ran with {len(split)} checkpoints: name one of {', '.join(split)}")
    raise AsitError(f"unknown encoder {name!r}; the results hold {', '.join(sorted(set(rows['encoder'])))}")


def compare(rows: pd.DataFrame, a: str, b: str, *, task: str | None = None, mode: str | None = None,
            resamples: int = RESAMPLES, seed: int = SEED) -> tuple[pd.DataFrame, list[str]]:
    """Paired comparisons (`stats.paired_comparison`) of encoders A and B on every task × mode × protocol both ran
    (optionally one task, by id or label, and one mode, by name or as the table shows it). Returns the table
    (COMPARE_COLUMNS; difference and interval in percentage points) and one note per column that could not be
    compared; raises if none could."""
    if not len(rows):
        raise AsitError("no successful results to compare")
    rows = label_rows(rows)
    rows_a, rows_b = _select_encoder(rows, a), _select_encoder(rows, b)
    if set(rows_a.index) & set(rows_b.index):
        raise AsitError(f"{a} and {b} are the same runs: compare two different encoders")
    smoke = sorted({column_label(t, m, p) for frame in (rows_a, rows_b)
                    for t, m, p, mode in zip(frame["task"], frame["metric"], frame["protocol"], frame["mode"])
                    if mode == SMOKE_MODE})
    rows_a, rows_b = rows_a[rows_a["mode"] != SMOKE_MODE], rows_b[rows_b["mode"] != SMOKE_MODE]
    if task is not None:
        tasks = {t for t in set(rows["task"]) if task in (t, TASK_LABELS.get(t))}
        if not tasks:
            raise AsitError(f"unknown task {task!r}; the results hold {', '.join(sorted(set(rows['task'])))}")
        rows_a, rows_b = rows_a[rows_a["task"].isin(tasks)], rows_b[rows_b["task"].isin(tasks)]
    if mode is not None:
        def pick(frame: pd.DataFrame) -> pd.DataFrame:
            shown = frame["mode"].map(_mode_label)
            return frame[(frame["base_mode"] == mode) | (frame["mode"] == mode) | (shown == mode)]
        rows_a, rows_b = pick(rows_a), pick(rows_b)
    column = ["task", "base_mode", "protocol"]
    smoke_note = [f"{label}: HEAR smoke test (heareval's reduced grid), not a measurement; not compared"
                  for label in smoke]
    common = sorted(set(map(tuple, rows_a[column].to_numpy())) & set(map(tuple, rows_b[column].to_numpy())),
                    key=lambda c: (_task_order(c[0]), c[1], c[2]))
    where = "".join(f" {label} {value}" for label, value in (("task", task), ("mode", mode)) if value)
    if not common:
        why = f" ({'; '.join(smoke_note)})" if smoke_note else ""
        raise AsitError(f"{a} and {b} share no task × mode × protocol{where and ' with' + where}{why}")
    records, notes = [], list(smoke_note)
    groups_a, groups_b = rows_a.groupby(column), rows_b.groupby(column)
    for key in common:
        side_a, side_b = groups_a.get_group(key), groups_b.get_group(key)
        for mode_a, group_a in side_a.groupby("mode", sort=True):
            for mode_b, group_b in side_b.groupby("mode", sort=True):
                try:
                    result: Comparison = paired_comparison(group_a, group_b, resamples=resamples, seed=seed)
                except AsitError as exc:
                    notes.append(str(exc))
                    continue
                record = {name: getattr(result, name) for name in COMPARE_COLUMNS}
                record["mode"] = mode_a if mode_a == mode_b else f"{mode_a} vs {mode_b}"
                records.append(record)
    if not records:
        failed = notes[len(smoke_note):]
        more = f" ({len(notes) - 1} more column(s) could not be compared either)" if len(notes) > 1 else ""
        raise AsitError(f"{(failed or notes)[0]}{more}")
    table = pd.DataFrame(records, columns=COMPARE_COLUMNS)
    return table.astype({"a_only": "Int64", "b_only": "Int64"}), notes


def _p(value: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def comparison_markdown(table: pd.DataFrame, notes: Sequence[str] = (), resamples: int = RESAMPLES) -> str:
    """The comparison as a Markdown table, then the columns left out and what the numbers are."""
    a, b = table["a"].iloc[0], table["b"].iloc[0]
    shown = pd.DataFrame({
        "Column": [column_label(t, m, p) for t, m, p in zip(table["task"], table["metric"], table["protocol"])],
        "Mode": table["mode"].map(lambda m: " vs ".join(_mode_label(x) for x in m.split(" vs "))),
        a: table["mean_a"].map("{:.1f}".format), b: table["mean_b"].map("{:.1f}".format),
        "A − B (pp) [95 % CI]": [f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]" for d, lo, hi in
                                 zip(table["difference"], table["ci_low"], table["ci_high"])],
        "p (bootstrap)": table["p_bootstrap"].map(_p), "p (McNemar)": table["p_mcnemar"].map(_p),
        "A only / B only": [f"{x} / {y}" if not pd.isna(x) else "—" for x, y in zip(table["a_only"], table["b_only"])],
        "runs": table["n_runs"], "clips": table["n_clips"],
    })
    text = f"A = {a}, B = {b}\n\n" + shown.to_markdown(index=False)
    text += ("\n\nA − B in percentage points on the runs paired by (seed, fold) and the test clips paired by path "
             f"(A's and B's metric on those clips in the A and B columns). Interval: 95 % percentile bootstrap, "
             f"{resamples} resamples of the clips of each fold (one draw shared by A, B and every seed of that "
             "fold), the per-run differences averaged over runs; it covers test-set sampling, not training seeds. "
             "p (bootstrap): two-sided, twice the smaller share of resampled differences on either side of 0. "
             "p (McNemar): exact binomial test on the clips only one of the two gets right (accuracy; folds pooled "
             "per seed, the largest p over seeds). A only / B only: those clips, summed over runs.\n")
    if notes:
        text += "\nNot compared:\n" + "".join(f"- {note}\n" for note in notes)
    return text


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", name)


def write_comparison(results: Sequence[str | Path], out_dir: str | Path, a: str, b: str, *, task: str | None = None,
                     mode: str | None = None, resamples: int = RESAMPLES, seed: int = SEED,
                     epoch: str = "best") -> ComparisonFiles:
    """`compare` on the stores' successful rows (finetune rows at `epoch`), written to
    <out_dir>/compare_<A>_vs_<B>.csv and .md."""
    rows = select_epoch(load_results(results), epoch)
    if not len(rows):
        raise AsitError(f"no successful results in {', '.join(map(str, results))}")
    table, notes = compare(rows, a, b, task=task, mode=mode, resamples=resamples, seed=seed)
    text = comparison_markdown(table, notes, resamples)
    out = output_folder(out_dir)
    stem = f"compare_{_file_part(a)}_vs_{_file_part(b)}"
    files = ComparisonFiles(csv=out / f"{stem}.csv", markdown=out / f"{stem}.md", table=table, text=text)
    atomic_write_text(files.csv, table.to_csv(index=False))
    atomic_write_text(files.markdown, f"# {a} vs {b}\n\n{text}")
    return files


__all__ = ["COMPARE_COLUMNS", "ComparisonFiles", "FLOOR_FBANK", "FLOOR_RANDOM", "LeaderboardFiles", "PRETRAINED",
           "REFERENCE_FILE", "aggregate", "compare", "comparison_markdown", "format_cell", "label_rows", "legend",
           "load_reference", "load_results", "long_table", "output_folder", "plot", "select_epoch", "store_files",
           "to_latex", "to_markdown", "wide_table", "write_comparison", "write_leaderboard", "write_tables"]
