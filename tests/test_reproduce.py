"""`asit reproduce ROW`: a real probe cell is run by a tiny suite, then re-run from its row (the same number on a
CPU), and refused when its commit, checkpoint, recipe or data no longer match; row look-up and verdicts."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

import benchmarks.results as results_module
from benchmarks import reproduce as reproduce_module
from benchmarks.reproduce import (IDENTICAL, NO_INTERVAL, OUTSIDE, WITHIN, check_provenance, find_row, judge,
                                  reproduce, stored_interval)
from benchmarks.results import ResultsStore
from benchmarks.stats import Interval
from benchmarks.suite import parse_suite, run_suite
from tasks.api import TaskCell, TaskResult
from tasks.corpus import CorpusPaths
from upstream import cli
from upstream.errors import AsitError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMIT = "1" * 40
OTHER = "2" * 40
# a quick probe that gets some of the corpus' clips wrong (the default one scores 100 %), so the row's clip-bootstrap
# interval has a width to judge a different number by
FAST = {"num_workers": 0, "n_jobs": 1, "C": [1e-3], "max_iter": 200, "pooling": "mean", "columns": "mean"}


@pytest.fixture(scope="module")
def made(corpus: CorpusPaths, tiny_encoder_file: Path, tmp_path_factory: pytest.TempPathFactory,
         one_torch_thread: None) -> Iterator[dict[str, Any]]:
    """One real probe cell (tiny encoder, ESC-50 fold 1 of a copy of the corpus) run by a suite into a store, with
    the project's commit pinned (rows record it; the check compares it) and the caches in the test's folder."""
    root = tmp_path_factory.mktemp("reproduce")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASIT_CACHE_DIR", str(root / "cache"))
        patch.setattr(results_module, "git_commit", lambda: COMMIT)
        shutil.copy(tiny_encoder_file, root / "encoder.pt")
        shutil.copytree(corpus.esc50, root / "esc50")
        raw = {"name": "repro", "encoders": {"tiny": {"path": str(root / "encoder.pt")}},
               "data": {"esc50": str(root / "esc50")}, "tasks": {"esc50": {"folds": [1]}}, "modes": ["probe"],
               "seeds": [0], "overrides": {"probe": FAST}, "results": str(root / "results.jsonl"),
               "work_dir": str(root / "work")}
        report = run_suite(parse_suite(raw), progress=False, log=lambda message: None)
        assert report.complete and len(report.succeeded) == 1
        [row] = ResultsStore(root / "results.jsonl").rows()
        assert 0.0 < row["value"] < 1.0
        yield {"root": root, "row": row, "store": root / "results.jsonl"}


def _moved(row: dict[str, Any], *, checkpoint: Path | None = None, data_root: Path | None = None) -> dict[str, Any]:
    """The row as if its cell had used another copy of the checkpoint or dataset (paths are not in the key)."""
    row = copy.deepcopy(row)
    if checkpoint is not None:
        row["checkpoint"] = row["config"]["encoder"]["path"] = str(checkpoint)
    if data_root is not None:
        row["config"]["data_root"] = str(data_root)
    return row


def _write_store(path: Path, rows: list[dict[str, Any]]) -> Path:
    store = ResultsStore(path)
    for row in rows:
        assert store.append(row)
    return path


# ----------------------------------------------------------------------------------------------- the real cell

def test_the_cell_reproduces_exactly_through_the_cli(made: dict[str, Any], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    row = made["row"]
    assert row["extra"]["data_fingerprint"]["digest"], "the row records the data it saw"
    monkeypatch.setitem(cli.COMMANDS, "reproduce", ("benchmarks.commands.reproduce", "reproduce a row"))
    work = tmp_path / "again"
    argv = ["reproduce", row["key"][:8], "--results", str(made["store"]), "--work-dir", str(work)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "verdict: identical" in out and "not added to any results store" in out

    summary = json.loads((work / "reproduction.json").read_text())
    assert summary["key"] == row["key"] and summary["verdict"] == IDENTICAL and summary["reproduced"] is True
    assert summary["new"] == summary["stored"] == row["value"] and summary["difference"] == 0.0
    interval = summary["interval"]
    assert interval["basis"] == "clips" and interval["low"] <= row["value"] <= interval["high"]
    assert interval["high"] > interval["low"] and summary["in_store"] is False
    # the encoder ran again (a fresh embedding cache in the work folder), on the same data
    assert summary["new_extra"]["encoder_forwards"] > 0 and summary["new_extra"]["cache_hits"] == 0
    assert Path(summary["new_extra"]["cache_dir"]).is_relative_to(work.resolve())
    assert summary["new_extra"]["data_fingerprint"]["digest"] == row["extra"]["data_fingerprint"]["digest"]
    assert len(ResultsStore(made["store"]).rows()) == 1, "the re-run is not written to the store"

    assert cli.main(argv) == 2                                   # the work folder is no longer fresh
    assert "not empty" in capsys.readouterr().err


def test_a_different_number_is_judged_against_the_stored_interval(made: dict[str, Any], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    row = made["row"]
    interval, _ = stored_interval(row)
    assert interval is not None and interval.high > interval.low
    shift = {"value": 1e-6 if row["value"] < (interval.low + interval.high) / 2 else -1e-6}

    def shifted_runner(cell: TaskCell, work_dir: Path) -> TaskResult:
        assert cell.overrides["cache_dir"] == str((work_dir / "embeddings").resolve())
        assert {k: v for k, v in cell.overrides.items() if k != "cache_dir"} == row["config"]["overrides"]
        return TaskResult("accuracy", row["value"] + shift["value"], {})

    near = reproduce(row, tmp_path / "near", runner=shifted_runner)
    assert near.verdict == WITHIN and near.reproduced and abs(near.difference) == pytest.approx(1e-6)
    assert near.interval is not None and near.interval.low <= near.new <= near.interval.high

    shift["value"] = 0.5 if row["value"] < 0.5 else -0.5
    far = reproduce(row, tmp_path / "far", runner=shifted_runner)
    assert far.verdict == OUTSIDE and not far.reproduced
    assert json.loads(far.summary.read_text())["verdict"] == OUTSIDE

    monkeypatch.setitem(cli.COMMANDS, "reproduce", ("benchmarks.commands.reproduce", "reproduce a row"))
    monkeypatch.setattr(reproduce_module, "resolve_runner", lambda spec: shifted_runner)
    assert cli.main(["reproduce", row["key"], "--results", str(made["store"]), "--work-dir",
                     str(tmp_path / "cli")]) == 1
    assert f"verdict: {OUTSIDE}" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- refusals

def test_refuses_after_the_checkpoint_changes(made: dict[str, Any], tmp_path: Path) -> None:
    from upstream.checkpoint import load_encoder, save_encoder

    checkpoint = tmp_path / "encoder.pt"
    shutil.copy(made["row"]["checkpoint"], checkpoint)
    row = _moved(made["row"], checkpoint=checkpoint)
    check_provenance(row)                                        # a copy is the same encoder

    loaded = load_encoder(checkpoint)
    with torch.no_grad():
        next(loaded.encoder.parameters()).add_(0.01)
    save_encoder(checkpoint, loaded.encoder, loaded.frontend, loaded.meta)
    with pytest.raises(AsitError, match="the checkpoint changed since the row was made") as info:
        reproduce(row, tmp_path / "work")
    assert str(checkpoint) in str(info.value)
    assert not (tmp_path / "work").exists(), "nothing runs before the provenance is checked"

    checkpoint.unlink()
    with pytest.raises(AsitError, match=f"checkpoint: {checkpoint} no longer exists"):
        check_provenance(row)


def test_refuses_another_commit_and_names_both(made: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    row = made["row"]
    monkeypatch.setattr(results_module, "git_commit", lambda: OTHER)
    with pytest.raises(AsitError) as info:
        check_provenance(row)
    message = str(info.value)
    assert f"made at {COMMIT}" in message and f"this tree is at {OTHER}" in message
    assert f"git checkout {COMMIT}" in message and "checkpoint" not in message and "fingerprint" not in message

    monkeypatch.setattr(results_module, "git_commit", lambda: COMMIT + "-dirty")
    with pytest.raises(AsitError, match="this tree has uncommitted changes"):
        check_provenance(row)


def test_refuses_a_row_made_from_a_dirty_tree(made: dict[str, Any]) -> None:
    row = copy.deepcopy(made["row"])
    row["git_commit"] = COMMIT + "-dirty"
    with pytest.raises(AsitError, match=f"cannot be reproduced exactly .*git checkout {COMMIT}"):
        check_provenance(row)


def test_every_mismatch_is_listed_in_one_error(made: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results_module, "git_commit", lambda: OTHER)
    row = _moved(made["row"], checkpoint=tmp_path / "gone.pt")
    del row["extra"]["data_fingerprint"]
    with pytest.raises(AsitError) as info:
        check_provenance(row)
    message = str(info.value)
    assert message.startswith(f"cannot reproduce row {row['key'][:12]} (tiny esc50 probe seed 0 fold 1): commit:")
    assert "; checkpoint: " in message and "made before fingerprints were recorded" in message


def test_refuses_after_the_data_changes(made: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "esc50"
    shutil.copytree(made["row"]["config"]["data_root"], data)
    row = _moved(made["row"], data_root=data)
    check_provenance(row)                                        # a copy of the same clips is the same data

    meta = data / "meta" / "esc50.csv"
    with meta.open(newline="") as handle:
        lines = list(csv.DictReader(handle))
    removed = lines.pop()
    (data / "audio" / removed["filename"]).unlink()
    with meta.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(removed))
        writer.writeheader()
        writer.writerows(lines)
    with pytest.raises(AsitError, match="data fingerprint: the data under .* changed since the row was made") as info:
        check_provenance(row)
    stored = row["extra"]["data_fingerprint"]
    assert f"digest {stored['digest']} -> " in str(info.value) and "files 50 -> 49" in str(info.value)


def test_refuses_a_row_without_a_fingerprint(made: dict[str, Any]) -> None:
    row = copy.deepcopy(made["row"])
    row["extra"]["data_fingerprint"] = None
    with pytest.raises(AsitError, match="made before fingerprints were recorded"):
        check_provenance(row)


def test_refuses_when_the_recipe_resolves_differently(made: dict[str, Any]) -> None:
    row = copy.deepcopy(made["row"])
    row["config"]["overrides"]["max_iter"] = 999                 # as if esc50_probe.yaml's default had changed
    with pytest.raises(AsitError, match="recipe: esc50_probe resolves differently now"):
        check_provenance(row)
    row = copy.deepcopy(made["row"])
    row["config"]["seed"] = 7                                    # a config that is not the row's cell
    with pytest.raises(AsitError, match="does not rebuild its key"):
        check_provenance(row)


# ----------------------------------------------------------------------------------------------- finding rows

def _fake(row: dict[str, Any], key: str, **fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(row)
    out.update(key=key, **fields)
    return out


def test_find_row_by_key_or_prefix(made: dict[str, Any], tmp_path: Path) -> None:
    row = made["row"]
    assert find_row(row["key"], [made["store"]]) == row
    assert find_row(row["key"][:6].upper(), [made["store"]]) == row
    assert find_row(row["key"][:10], [made["store"].parent]) == row     # a folder of stores
    with pytest.raises(AsitError, match="too short"):
        find_row(row["key"][:5], [made["store"]])
    with pytest.raises(AsitError, match="no successful row with key 'ffffff0000'"):
        find_row("ffffff0000", [made["store"]])
    with pytest.raises(AsitError, match="does not exist"):
        find_row(row["key"], [tmp_path / "nowhere.jsonl"])


def test_an_ambiguous_prefix_lists_the_candidates(made: dict[str, Any], tmp_path: Path) -> None:
    a, b = "abcdef01" + "0" * 24, "abcdef02" + "0" * 24
    store = _write_store(tmp_path / "s.jsonl", [_fake(made["row"], a), _fake(made["row"], b, seed=3)])
    with pytest.raises(AsitError, match="matches 2 rows") as info:
        find_row("abcdef", [store])
    assert "abcdef010000 tiny esc50 probe seed 0 fold 1" in str(info.value)
    assert "abcdef020000 tiny esc50 probe seed 3 fold 1" in str(info.value)
    assert find_row("abcdef02", [store])["seed"] == 3


def test_the_first_store_wins_and_failed_rows_are_not_reproduced(made: dict[str, Any], tmp_path: Path) -> None:
    key = "abcdef" + "0" * 26
    first = _write_store(tmp_path / "a.jsonl", [_fake(made["row"], key, value=0.25)])
    second = _write_store(tmp_path / "b.jsonl", [_fake(made["row"], key, value=0.75)])
    assert find_row(key, [first, second])["value"] == 0.25
    failed = _fake(made["row"], "fa11ed" + "0" * 26, status="failed", value=None, error="RuntimeError: boom\ntb")
    store = _write_store(tmp_path / "f.jsonl", [failed])
    with pytest.raises(AsitError, match=r"only failed \(RuntimeError: boom\): there is no number to reproduce"):
        find_row("fa11ed", [store])


def test_hear_and_s3prl_rows_are_refused_with_how_to_redo_them(made: dict[str, Any], tmp_path: Path) -> None:
    hear = _fake(made["row"], "4ea400" + "0" * 26, mode="hear")
    hear["config"].update(mode="hear", data_root="/emb/asit_hear/esc50-v2.0.0-full")
    s3prl = _fake(made["row"], "53b41f" + "0" * 26, mode="s3prl-frozen")
    s3prl["extra"]["expdir"] = "/runs/result/sid_asit"
    store = _write_store(tmp_path / "other.jsonl", [hear, s3prl])
    with pytest.raises(AsitError, match="HEAR row.*/emb/asit_hear/esc50-v2.0.0-full.*--hear-scores"):
        find_row("4ea400", [store])
    with pytest.raises(AsitError, match=r"s3prl row.*\(/runs/result/sid_asit\).*`asit s3prl`.*--s3prl-runs"):
        find_row("53b41f", [store])
    with pytest.raises(AsitError, match="HEAR row"):
        check_provenance(hear)


# ----------------------------------------------------------------------------------------------- verdicts

def test_verdicts() -> None:
    interval = Interval(0.6, 0.8, "clips")
    assert judge(0.7, 0.7 + 1e-10, interval) == IDENTICAL
    assert judge(0.7, 0.7 + 1e-10, None) == IDENTICAL
    assert judge(0.7, 0.75, interval) == WITHIN and judge(0.7, 0.8, interval) == WITHIN
    assert judge(0.7, 0.81, interval) == OUTSIDE and judge(0.7, 0.59, interval) == OUTSIDE
    assert judge(0.7, 0.75, None) == NO_INTERVAL
