"""Leaderboard tables: statistics from known rows, quoted reference rows, protocol tags, the four file formats, and
HEAR ingestion from heareval's own predictions runner."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.hear_results import find_task_dirs, ingest_hear_scores
from benchmarks.results import ResultsStore, cell_key, make_row
from benchmarks.suite import TASK_PROTOCOLS
from benchmarks.table import (REFERENCE_FILE, aggregate, load_reference, load_results, long_table, wide_table,
                              write_leaderboard)
from tasks.api import EncoderSpec, TaskCell, TaskResult
from upstream.cli import main as cli_main
from upstream.errors import AsitError

ROOT = Path(__file__).resolve().parent.parent

# (encoder, init, task, mode, seed, fold, value)
KNOWN = [
    *[("pre", "pretrained", "esc50", "finetune", s, f, 0.60 + 0.01 * f + 0.05 * s)
      for s in (1, 2) for f in range(1, 6)],
    *[("pre", "pretrained", "esc50", "probe", s, f, 0.40 + 0.02 * f) for s in (1,) for f in range(1, 6)],
    ("pre", "pretrained", "voxceleb1", "finetune", 1, None, 0.30),
    ("pre", "pretrained", "voxceleb1", "finetune", 2, None, 0.36),
    ("pre", "pretrained", "as20k", "finetune", 1, None, 0.125),
    ("scr", "scratch", "esc50", "finetune", 1, 1, 0.20),
]


def _fill(store: ResultsStore, checkpoint: Path, rows=KNOWN, sha: str = "a" * 64) -> None:
    for encoder, init, task, mode, seed, fold, value in rows:
        cell = TaskCell(EncoderSpec(encoder, str(checkpoint), init), task, mode, TASK_PROTOCOLS[task][0], seed, fold)
        metric = "mAP" if task == "as20k" else "accuracy"
        store.append(make_row(cell, cell_key(cell, sha), sha, result=TaskResult(metric, value),
                              pretraining="unit corpus" if init == "pretrained" else "none (scratch)"))


@pytest.fixture()
def store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "results.jsonl")
    _fill(store, tmp_path / "encoder.pt")
    return store


def test_mean_std_and_counts_over_seeds_and_folds(store: ResultsStore) -> None:
    agg = aggregate(store.successes()).set_index(["encoder", "task", "mode"])
    esc_ft = [100 * (0.60 + 0.01 * f + 0.05 * s) for s in (1, 2) for f in range(1, 6)]
    row = agg.loc[("pre", "esc50", "finetune")]
    assert row["mean"] == pytest.approx(np.mean(esc_ft)) and row["std"] == pytest.approx(np.std(esc_ft, ddof=1))
    assert (row["n"], row["seeds"], row["folds"]) == (10, 2, 5)
    sid = agg.loc[("pre", "voxceleb1", "finetune")]
    assert sid["mean"] == pytest.approx(33.0) and sid["std"] == pytest.approx(np.std([30, 36], ddof=1))
    assert (sid["n"], sid["seeds"], sid["folds"]) == (2, 2, 1)
    single = agg.loc[("scr", "esc50", "finetune")]
    assert single["n"] == 1 and pd.isna(single["std"]) and single["pretraining"] == "none (scratch)"
    assert agg.loc[("pre", "as20k", "finetune")]["metric"] == "mAP"


def test_one_name_two_checkpoints_are_not_averaged(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    _fill(store, tmp_path / "a.pt", [("enc", "pretrained", "voxceleb1", "probe", 1, None, 0.2)], sha="1" * 64)
    _fill(store, tmp_path / "b.pt", [("enc", "pretrained", "voxceleb1", "probe", 1, None, 0.8)], sha="2" * 64)
    agg = aggregate(store.successes())
    assert sorted(agg["encoder"]) == ["enc@11111111", "enc@22222222"] and sorted(agg["mean"]) == [20.0, 80.0]


def test_runs_of_two_recipes_are_not_averaged(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    for seed, digest, value in ((1, "aaaaaa11", 0.2), (2, "aaaaaa11", 0.4), (1, "bbbbbb22", 0.9)):
        cell = TaskCell(EncoderSpec("enc", "/c.pt"), "voxceleb1", "finetune", TASK_PROTOCOLS["voxceleb1"][0], seed)
        store.append(make_row(cell, cell_key(cell, "a" * 64, digest), "a" * 64, recipe_digest=digest,
                              result=TaskResult("accuracy", value)))
    agg = aggregate(store.successes()).set_index("mode")
    assert agg.loc["finetune · recipe aaaaaa", "mean"] == pytest.approx(30.0)
    assert agg.loc["finetune · recipe bbbbbb", "n"] == 1
    assert set(wide_table(long_table(store.successes()))["Mode"]) == {"finetune · recipe aaaaaa",
                                                                       "finetune · recipe bbbbbb"}


def test_reference_rows_are_quoted_sourced_and_share_our_protocols() -> None:
    ref = load_reference()
    data = yaml.safe_load(REFERENCE_FILE.read_text())
    assert len(ref) == sum(len(r["values"]) for r in data["rows"])
    asit = ref[ref["model"].str.startswith("ASiT")]
    assert asit["source"].str.startswith("quoted: Atito et al., arXiv:2211.13189").all()
    # rows with their own citation keep it: the conformer wav2vec 2.0 paper's Tables 1 and 3 (x100 for Table 1)
    conformer = ref[ref["model"].str.startswith("Conformer")].set_index(["model", "task"])["mean"]
    assert ref[ref["model"].str.startswith("Conformer")]["source"].str.startswith("quoted: Srivastava et al.").all()
    assert conformer[("Conformer cf_L (wav2vec 2.0)", "as20k")] == 27.6
    assert conformer[("Conformer cf_S (wav2vec 2.0)", "esc50")] == 80.7
    peers = ref.set_index(["model", "task"])                 # ACM-SSKD (x100 of fractions), SupMAM (percent)
    assert peers.loc[("ACM-SSKD (iter3)", "as2m"), "mean"] == 49.2
    assert peers.loc[("SupMAM-CLAP ViT-B", "speechcommands_v1"), "mean"] == 97.6
    assert peers.loc[("ACM-SSKD (iter1)", "esc50"), "source"] == ("quoted: Gong et al., Electronics 2024, "
                                                                   "Tables 10 and 12")
    ablations = ref[ref["model"].str.startswith("ASiT ViT-S ablation")]
    assert sorted(ablations["mean"]) == [11.2, 17.8, 27.9, 28.4, 28.8, 29.0, 29.2, 29.4, 31.9]
    assert set(ablations["task"]) == {"as20k"}
    atito = ref["model"].str.startswith("ASiT ViT-B")
    assert ref["n"].isna().all() and ref["std"].isna().all()
    values = ref[atito].set_index(["pretraining", "task"])["mean"]
    assert values[("AS-2M", "as20k")] == 37.4 and values[("ImageNet → AS-2M", "esc50")] == 95.3
    assert values[("AS-2M", "voxceleb1")] == 85.9 and values[("ImageNet → AS-2M", "speechcommands_v2")] == 98.9
    for task, (protocol, _) in TASK_PROTOCOLS.items():     # the paper's protocols are our default ones
        assert set(ref[ref["task"] == task]["protocol"]) == {protocol}


def test_wide_table_tags_protocols_and_modes_and_puts_quotes_beside_ours(store: ResultsStore) -> None:
    long = long_table(store.successes(), load_reference())
    assert set(long["task"]) == {"esc50", "voxceleb1", "as20k"}        # quoted columns we did not measure dropped
    wide = wide_table(long)
    esc_col = "ESC-50 acc [esc50/train4-test1]"
    assert list(wide.columns) == ["Model", "Kind", "Pretraining", "Mode", "Source",
                                  "AS-20K mAP [as20k/balanced-train-eval]", esc_col, "SID acc [voxceleb1/iden-split]"]
    quoted = wide[wide["Source"] != "ours"]
    assert len(quoted) == 22 and quoted["Source"].str.startswith("quoted").all()   # reference rows with these columns
    esc = quoted.set_index("Model")[esc_col]
    assert esc["Conformer cf_S (wav2vec 2.0)"] == "80.7" and esc["ACM-SSKD (iter3)"] == "98.4"
    assert esc["SupMAM ViT-B"] == "96.2" and esc["ASiT ViT-S ablation: full (unaligned GMML)"] == "—"
    ours = wide[wide["Source"] == "ours"].set_index(["Model", "Mode"])
    esc_ft = [100 * (0.60 + 0.01 * f + 0.05 * s) for s in (1, 2) for f in range(1, 6)]
    cell = ours.loc[("pre", "finetune"), esc_col]            # mean ± std [bootstrap interval over runs] (n)
    assert cell.startswith(f"{np.mean(esc_ft):.1f} ± {np.std(esc_ft, ddof=1):.1f} [") and cell.endswith("] (n=10)")
    assert ours.loc[("pre", "probe (frozen)"), "SID acc [voxceleb1/iden-split]"] == "—"
    assert ours.loc[("scr", "finetune"), esc_col] == "20.0 (n=1)"
    assert ours.loc[("pre", "finetune"), "AS-20K mAP [as20k/balanced-train-eval]"] == "12.5 (n=1)"
    assert ours.loc[("pre", "finetune"), "Pretraining"] == "unit corpus"


def test_write_leaderboard_writes_markdown_csv_latex_png(store: ResultsStore, tmp_path: Path) -> None:
    files = write_leaderboard([store.path], tmp_path / "out", title="Unit leaderboard")
    md = files.markdown.read_text()
    assert md.startswith("# Unit leaderboard") and files.text in md and "| Model" in md
    assert "quoted: Atito et al." in md and "[esc50/train4-test1]" in md
    wide = pd.read_csv(files.csv)
    assert list(wide.columns[:5]) == ["Model", "Kind", "Pretraining", "Mode", "Source"] and len(wide) == 22 + 3
    long = pd.read_csv(files.long_csv)
    row = long[(long["model"] == "pre") & (long["task"] == "voxceleb1")].iloc[0]
    assert row["mean"] == pytest.approx(33.0) and row["n"] == 2 and row["source"] == "ours"
    tex = files.latex.read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and r"\toprule" in tex
    assert r"ImageNet $\rightarrow$ AS-2M" in tex and "±" not in tex and "→" not in tex
    import matplotlib.image

    assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(files.png)
    assert image.shape[0] > 300 and image.shape[1] > 600


def test_cells_that_only_failed_are_counted_under_the_table(store: ResultsStore, tmp_path: Path) -> None:
    cell = TaskCell(EncoderSpec("pre", "/c.pt"), "voxceleb1", "probe", TASK_PROTOCOLS["voxceleb1"][0], 9)
    store.append(make_row(cell, "never-ok", "a" * 64, error="RuntimeError: out of memory"))
    files = write_leaderboard([store.path], tmp_path / "out")
    assert "1 cell(s) failed in every run" in files.markdown.read_text()


def test_table_cli_and_errors(store: ResultsStore, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "board"
    assert cli_main(["table", "--results", str(store.path.parent), "--out", str(out), "--no-reference"]) == 0
    printed = capsys.readouterr().out
    assert "quoted" not in printed and "pre" in printed and (out / "leaderboard.png").is_file()
    assert cli_main(["table", "--results", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli_main(["table", "--results", str(empty)]) == 2
    assert "no successful results" in capsys.readouterr().err


def test_load_results_merges_stores_without_double_counting(store: ResultsStore, tmp_path: Path) -> None:
    copy = tmp_path / "more" / "copy.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(store.path.read_bytes())
    assert len(load_results([store.path, copy])) == len(KNOWN)


# ------------------------------------------------------------------------------------------------ HEAR ingestion

def _hear_task(folder: Path, kfold: bool) -> Path:
    """A small heareval task folder (the files heareval's embeddings runner writes) with separable embeddings."""
    rng = np.random.default_rng(0)
    labels = ["dog", "rain", "siren"]
    splits = [f"fold{i:02d}" for i in range(5)] if kfold else ["train", "valid", "test"]
    folder.mkdir(parents=True)
    meta = {"task_name": "esc50" if kfold else "speechcommands_v2", "version": "v", "embedding_type": "scene",
            "prediction_type": "multiclass", "split_mode": "presplit_kfold" if kfold else "trainvaltest",
            "splits": splits, "evaluation": ["top1_acc"], "sample_duration": 1.0}
    (folder / "task_metadata.json").write_text(json.dumps(meta))
    (folder / "labelvocabulary.csv").write_text("idx,label\n" + "".join(f"{i},{n}\n" for i, n in enumerate(labels)))
    for split in splits:
        y = rng.integers(0, 3, 12)
        x = (rng.standard_normal((12, 8)) + 3.0 * np.eye(3, 8)[y]).astype(np.float32)
        memmap = np.memmap(folder / f"{split}.embeddings.npy", dtype=np.float32, mode="w+", shape=x.shape)
        memmap[:] = x
        memmap.flush()
        (folder / f"{split}.embedding-dimensions.json").write_text(json.dumps(list(x.shape)))
        with open(folder / f"{split}.target-labels.pkl", "wb") as handle:
            pickle.dump([[labels[i]] for i in y], handle)
    return folder


@pytest.mark.e2e
def test_hear_scores_from_heareval_runner_become_protocol_tagged_rows(tmp_path: Path) -> None:
    module_dir = tmp_path / "embeddings" / "asit_hear"
    esc = _hear_task(module_dir / "esc50-v2.0.0-full", kfold=True)
    ks = _hear_task(module_dir / "speechcommands_v2", kfold=False)          # as `asit hear-tasks` names it
    # heareval's own predictions runner (pytorch_lightning 1.x; its checkpoints need weights_only off)
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-m", "heareval.predictions.runner", str(esc), str(ks),
                          "--grid-points", "1", "--grid", "faster"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    scores = json.loads((esc / "test.predicted-scores.json").read_text())

    checkpoint = tmp_path / "encoder.pt"
    checkpoint.write_bytes(b"weights")
    store = ResultsStore(tmp_path / "hear.jsonl")
    assert find_task_dirs(tmp_path / "embeddings") == [esc, ks]
    assert cli_main(["bench", "--hear-scores", str(tmp_path / "embeddings"), "--encoder", "asit-x", "--checkpoint",
                     str(checkpoint), "--results", str(store.path), "--pretraining", "unit"]) == 0
    rows = store.rows()
    assert len(rows) == 6 and {r["mode"] for r in rows} == {"hear"}
    esc_rows = sorted((r for r in rows if r["task"] == "esc50"), key=lambda r: r["fold"])
    assert [r["fold"] for r in esc_rows] == [0, 1, 2, 3, 4]
    assert {r["protocol"] for r in esc_rows} == {"hear/esc50-v2.0.0-full/5fold-3/1/1"}
    assert [r["value"] for r in esc_rows] == [scores[f"fold{i:02d}"]["test_top1_acc"] for i in range(5)]
    assert all(r["metric"] == "accuracy" and r["seed"] == 42 for r in esc_rows)
    [ks_row] = [r for r in rows if r["task"] == "speechcommands_v2"]
    assert ks_row["protocol"] == "hear/speechcommands_v2/train-valid-test" and ks_row["fold"] is None
    # ingesting again adds nothing; the table gives HEAR its own columns, never the paper's
    assert ingest_hear_scores(tmp_path / "embeddings", EncoderSpec("asit-x", str(checkpoint)), store) == (0, 6)
    wide = wide_table(long_table(store.successes(), load_reference()))
    assert "ESC-50 acc [hear/esc50-v2.0.0-full/5fold-3/1/1]" in wide.columns
    assert "ESC-50 acc [esc50/train4-test1]" not in wide.columns
    # heareval's `faster` grid, recognised from the hparams its runner wrote: a smoke test, labelled so
    assert {r["extra"]["heareval_grid"] for r in rows} == {"faster"}
    assert set(wide["Mode"]) == {"HEAR MLP (frozen), smoke test"}


def test_hear_ingestion_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(AsitError, match="does not exist"):
        find_task_dirs(tmp_path / "nope")
    with pytest.raises(AsitError, match="no test.predicted-scores.json under"):
        find_task_dirs(tmp_path)
    task = tmp_path / "t"
    task.mkdir()
    (task / "test.predicted-scores.json").write_text("{}")
    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"w")
    with pytest.raises(AsitError, match="task_metadata.json is missing"):
        ingest_hear_scores(task, EncoderSpec("e", str(checkpoint)), ResultsStore(tmp_path / "r.jsonl"))


def test_plot_tick_labels_wrap_protocols_without_losing_text() -> None:
    from benchmarks.table import _tick_label

    for column in ["SC-V2 acc [hear/speechcommands_v2/train-valid-test]", "ESC-50 acc [esc50/train4-test1]",
                   "AS-20K mAP [as20k/balanced-train-eval]", "ESC-50 acc [hear/esc50-v2.0.0-full/5fold-3/1/1]"]:
        label = _tick_label(column)
        assert label.replace("\n", " ", 1).replace("\n", "") == column
        assert all(len(line) <= 20 or "/" not in line.strip("[]/") for line in label.split("\n")[1:])
    assert _tick_label("SID acc [voxceleb1/iden-split]") == "SID acc\n[voxceleb1/\niden-split]"


def test_hear_runs_of_two_modules_or_grids_stay_apart(tmp_path: Path) -> None:
    """heareval folders of two embedding modules (e.g. other --model-options) on one checkpoint are other cells."""
    def scored(folder: Path, accuracy: float) -> None:
        folder.mkdir(parents=True)
        (folder / "task_metadata.json").write_text(json.dumps(
            {"task_name": "esc50", "split_mode": "presplit_kfold", "splits": [f"fold{i:02d}" for i in range(5)],
             "evaluation": ["top1_acc"]}))
        (folder / "test.predicted-scores.json").write_text(json.dumps(
            {f"fold{i:02d}": {"test_top1_acc": accuracy, "test_score": accuracy} for i in range(5)}))

    scored(tmp_path / "embeddings" / "asit_hear" / "esc50", 0.8)
    scored(tmp_path / "embeddings" / "asit_hear-layers=2" / "esc50", 0.6)
    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"w")
    store = ResultsStore(tmp_path / "r.jsonl")
    assert ingest_hear_scores(tmp_path / "embeddings", EncoderSpec("e", str(checkpoint)), store) == (10, 0)
    assert ingest_hear_scores(tmp_path / "embeddings", EncoderSpec("e", str(checkpoint)), store) == (0, 10)
    agg = aggregate(store.successes())
    assert sorted(agg["mean"]) == pytest.approx([60.0, 80.0]) and set(agg["n"]) == {5}
