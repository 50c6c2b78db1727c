"""Leaderboards from results stores: mean ± std over seeds and folds, our rows beside the paper's quoted rows.

One column per (task, protocol): a number is only ever compared with numbers measured under the same protocol
(ESC-50 train-4/test-1 and HEAR's 3/1/1 are different columns). Rows are (model, pretraining data, mode, source);
the mode says whether the encoder was finetuned or frozen. Quoted rows come from benchmarks/reference.yaml.

Outputs (`write_leaderboard`): leaderboard.md, leaderboard.csv (the same wide table), leaderboard_long.csv (one
numeric row per model × mode × task × protocol: mean, std, n, seeds, folds), leaderboard.tex and leaderboard.png.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

import pandas as pd
import yaml

from tasks.api import TASKS
from upstream.atomic import atomic_write_text
from upstream.errors import AsitError

from .results import ResultsStore

REFERENCE_FILE = Path(__file__).parent / "reference.yaml"
TASK_LABELS = {"as2m": "AS-2M", "as20k": "AS-20K", "esc50": "ESC-50", "speechcommands_v2": "SC-V2",
               "speechcommands_v1": "SC-V1", "voxceleb1": "SID"}
METRIC_LABELS = {"accuracy": "acc", "mAP": "mAP"}
MODE_LABELS = {"finetune": "finetune", "probe": "probe (frozen)", "hear": "HEAR MLP (frozen)",
               "s3prl-frozen": "s3prl frozen", "s3prl-finetune": "s3prl finetuned"}
OURS = "ours"
INDEX = ["Model", "Pretraining", "Mode", "Source"]
LONG_COLUMNS = ["source", "model", "pretraining", "mode", "task", "protocol", "metric", "mean", "std", "n", "seeds",
                "folds"]


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


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) of the value in percent over every seed × fold cell of an encoder × task × mode
    × protocol; `n` counts the cells, `seeds` and `folds` the distinct ones. Runs are never averaged across
    checkpoints or recipes: an encoder name used with two checkpoint files becomes `name@sha8` rows, a task × mode
    run with two resolved recipes becomes `mode · recipe <digest6>` rows."""
    columns = ["encoder", "pretraining", "init", "task", "mode", "protocol", "metric", "mean", "std", "n", "seeds",
               "folds"]
    if rows is None or not len(rows):
        return pd.DataFrame(columns=columns)
    rows = rows.copy()
    for name, default in (("pretraining", ""), ("init", "pretrained"), ("checkpoint_sha256", "")):
        if name not in rows:
            rows[name] = default
        rows[name] = rows[name].fillna(default)
    shas = rows.groupby("encoder")["checkpoint_sha256"].transform("nunique")
    rows["encoder"] = rows["encoder"].where(shas <= 1, rows["encoder"] + "@" + rows["checkpoint_sha256"].str[:8])
    if "recipe_digest" not in rows:
        rows["recipe_digest"] = ""
    rows["recipe_digest"] = rows["recipe_digest"].fillna("")
    recipes = rows.groupby(["encoder", "task", "mode", "protocol"])["recipe_digest"].transform("nunique")
    rows["mode"] = rows["mode"].where(recipes <= 1, rows["mode"] + " · recipe " + rows["recipe_digest"].str[:6])
    rows["percent"] = rows["value"].astype(float) * 100.0
    rows["fold_key"] = rows["fold"].astype("string").fillna("-")
    grouped = rows.groupby(["encoder", "pretraining", "init", "task", "mode", "protocol", "metric"], sort=False,
                           dropna=False)
    out = grouped.agg(mean=("percent", "mean"), std=("percent", "std"), n=("percent", "size"),
                      seeds=("seed", "nunique"), folds=("fold_key", "nunique")).reset_index()
    return out[columns]


def load_reference(path: str | Path = REFERENCE_FILE) -> pd.DataFrame:
    """Quoted rows in the long format (mean in percent, std/n empty)."""
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
            records.append({"source": f"quoted: {row.get('citation', data['citation'])}", "model": row["model"],
                            "pretraining": row["pretraining"], "mode": row["mode"], "task": task,
                            "protocol": protocols[task], "metric": metrics[task], "mean": float(value),
                            "std": float("nan"), "n": float("nan"), "seeds": float("nan"), "folds": float("nan")})
    return pd.DataFrame(records, columns=LONG_COLUMNS)


def long_table(results: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Ours (aggregated) + quoted rows; quoted rows are kept only for (task, protocol) columns we measured, unless
    nothing was measured at all."""
    agg = aggregate(results)
    ours = pd.DataFrame({
        "source": OURS, "model": agg["encoder"], "pretraining": agg["pretraining"].replace("", "unspecified"),
        "mode": agg["mode"], "task": agg["task"], "protocol": agg["protocol"], "metric": agg["metric"],
        "mean": agg["mean"], "std": agg["std"], "n": agg["n"], "seeds": agg["seeds"], "folds": agg["folds"],
    }, columns=LONG_COLUMNS)
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


def format_cell(mean: float, std: float, n: float, pm: str = "±") -> str:
    if pd.isna(mean):
        return "—"
    if pd.isna(n):                       # quoted: the number as printed
        return f"{mean:.1f}"
    if n > 1 and not pd.isna(std):
        return f"{mean:.1f} {pm} {std:.1f} (n={int(n)})"
    return f"{mean:.1f} (n={int(n)})"


def wide_table(long: pd.DataFrame, pm: str = "±") -> pd.DataFrame:
    """The leaderboard: one row per (model, pretraining, mode, source), one column per (task, metric, protocol)."""
    if not len(long):
        return pd.DataFrame(columns=INDEX)
    frame = long.copy()
    frame["Model"] = frame["model"]
    frame["Pretraining"] = frame["pretraining"]
    frame["Mode"] = frame["mode"].map(_mode_label)
    frame["Source"] = frame["source"]
    frame["column"] = [column_label(t, m, p) for t, m, p in zip(frame["task"], frame["metric"], frame["protocol"])]
    frame["cell"] = [format_cell(m, s, n, pm) for m, s, n in zip(frame["mean"], frame["std"], frame["n"])]
    order = (frame.assign(_task=[_task_order(t) for t in frame["task"]])
             .sort_values(["_task", "protocol"])["column"].drop_duplicates().tolist())
    wide = frame.pivot_table(index=INDEX, columns="column", values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(columns=order).fillna("—")
    rows = frame[INDEX].drop_duplicates()
    rows = rows.assign(_quoted=rows["Source"] != OURS, _mode=rows["Mode"]).sort_values(
        ["_quoted", "Model", "_mode"], ascending=[False, True, True])
    wide = wide.reindex(pd.MultiIndex.from_frame(rows[INDEX])).reset_index()
    wide.columns.name = None
    return wide


# ------------------------------------------------------------------------------------------------------ writing

@dataclass
class LeaderboardFiles:
    markdown: Path
    csv: Path
    long_csv: Path
    latex: Path
    png: Path
    text: str                            # the Markdown table


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
    return latex.replace("→", r"$\rightarrow$").replace("—", "--")


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
    quoted rows hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = long.copy()
    frame["column"] = [column_label(t, m, p) for t, m, p in zip(frame["task"], frame["metric"], frame["protocol"])]
    frame["entry"] = [f"{m} · {p} · {_mode_label(d)}" + ("" if s == OURS else " (quoted)")
                      for m, p, d, s in zip(frame["model"], frame["pretraining"], frame["mode"], frame["source"])]
    columns = (frame.assign(_task=[_task_order(t) for t in frame["task"]])
               .sort_values(["_task", "protocol"])["column"].drop_duplicates().tolist())
    entries = frame.drop_duplicates("entry")
    entries = entries.assign(_quoted=entries["source"] != OURS).sort_values(["_quoted", "model", "mode"],
                                                                            ascending=[False, True, True])
    width = 0.8 / max(1, len(entries))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(columns) + 2.5), 4.8))
    cmap = plt.get_cmap("tab10")
    for i, (_, entry) in enumerate(entries.iterrows()):
        cells = frame[frame["entry"] == entry["entry"]].set_index("column")
        means = [cells["mean"].get(c, float("nan")) for c in columns]
        stds = [cells["std"].get(c, float("nan")) for c in columns]
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(columns))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, color=cmap(i % 10),
               hatch="//" if entry["source"] != OURS else None, edgecolor="black", linewidth=0.4,
               label=entry["entry"])
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([_tick_label(c) for c in columns], fontsize=7)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def write_leaderboard(results: Sequence[str | Path], out_dir: str | Path, *, reference: bool = True,
                      title: str = "Leaderboard", keys: Collection[str] | None = None) -> LeaderboardFiles:
    """Read the stores, build the tables and write all five files into `out_dir`. `keys`: only these cells (e.g.
    one suite's grid, leaving out rows of earlier versions of its recipes that the same store still holds)."""
    rows = load_results(results)
    if keys is not None:
        rows = rows[rows["key"].isin(set(keys))]
    if not len(rows):
        raise AsitError(f"no successful results in {', '.join(map(str, results))}")
    long = long_table(rows, load_reference() if reference else None)
    return write_tables(long, out_dir, title=title, failed=count_failed(results, keys))


def count_failed(paths: Sequence[str | Path], keys: Collection[str] | None = None) -> int:
    """Cells whose every run failed (they are not in the table; their rows hold the errors)."""
    frames = [ResultsStore(f).latest() for f in store_files(paths)]
    failed = {k for f in frames for k, s in zip(f["key"], f["status"]) if s != "ok"}
    ok = {k for f in frames for k, s in zip(f["key"], f["status"]) if s == "ok"}
    return len((failed - ok) & set(keys)) if keys is not None else len(failed - ok)


def write_tables(long: pd.DataFrame, out_dir: str | Path, *, title: str = "Leaderboard",
                 failed: int = 0) -> LeaderboardFiles:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wide = wide_table(long)
    text = to_markdown(wide)
    legend = ("\n\nCells: mean ± sample std over seeds × folds in %, n = number of runs; quoted rows are as "
              "printed in their source. Columns are task, metric [protocol]: numbers in one column share a "
              "protocol.\n")
    if failed:
        legend += f"\n{failed} cell(s) failed in every run and are not in the table (their errors are in the store).\n"
    files = LeaderboardFiles(markdown=out / "leaderboard.md", csv=out / "leaderboard.csv",
                             long_csv=out / "leaderboard_long.csv", latex=out / "leaderboard.tex",
                             png=out / "leaderboard.png", text=text)
    atomic_write_text(files.markdown, f"# {title}\n\n{text}{legend}")
    atomic_write_text(files.csv, wide.to_csv(index=False))
    atomic_write_text(files.long_csv, long.to_csv(index=False))
    atomic_write_text(files.latex, to_latex(long, caption=title))
    plot(long, files.png, title=title)
    return files




__all__ = ["LeaderboardFiles", "REFERENCE_FILE", "aggregate", "format_cell", "load_reference", "load_results",
           "long_table", "plot", "store_files", "to_latex", "to_markdown", "wide_table", "write_leaderboard",
           "write_tables"]
