"""The results store: complete rows only, whatever kills the writer; one successful row per cell key."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks.results import (STATUS_FAILED, STATUS_OK, ResultsStore, cell_key, file_sha256, git_commit,
                                make_row)
from tasks.api import EncoderSpec, TaskCell, TaskResult

ROOT = Path(__file__).resolve().parent.parent
CELL = TaskCell(EncoderSpec("enc", "/ckpt.pt"), "esc50", "finetune", "esc50/train4-test1", seed=1, fold=3,
                data_root="/data/ESC-50-master", overrides={"epochs": 2})


def _row(key: str = "k1", value: float = 0.5, status: str = STATUS_OK) -> dict:
    if status == STATUS_OK:
        return make_row(CELL, key, "sha", result=TaskResult("accuracy", value, {"n_test": 10}), duration_s=1.5)
    return make_row(CELL, key, "sha", error="RuntimeError: boom", duration_s=0.1)


def test_row_round_trip_carries_provenance(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "sub" / "results.jsonl")
    assert store.rows() == []
    assert store.append(_row(value=0.875))
    [row] = store.rows()
    assert row["status"] == STATUS_OK and row["value"] == 0.875 and row["metric"] == "accuracy"
    assert (row["encoder"], row["task"], row["mode"], row["protocol"], row["seed"], row["fold"]) == \
        ("enc", "esc50", "finetune", "esc50/train4-test1", 1, 3)
    assert row["config"]["overrides"] == {"epochs": 2} and row["config"]["data_root"] == "/data/ESC-50-master"
    assert row["extra"] == {"n_test": 10} and row["duration_s"] == 1.5
    assert row["git_commit"] == git_commit() and row["host"] and row["timestamp"].endswith("+00:00")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert row["git_commit"].startswith(head) if head else row["git_commit"] == "unknown"


def test_non_finite_extra_values_still_serialise(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    row = make_row(CELL, "k", "sha", result=TaskResult("accuracy", 0.5, {"loss": float("nan"), "p": Path("/x")}))
    store.append(row)
    assert store.rows()[0]["extra"] == {"loss": None, "p": "/x"}


def test_second_success_for_a_key_is_refused_and_failures_are_history(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    assert store.append(_row("a", status=STATUS_FAILED))
    assert store.finished_keys() == set()                  # a failed cell is not finished: it will be retried
    assert store.append(_row("a", 0.25))
    assert not store.append(_row("a", 0.75))               # duplicate success: nothing written
    assert store.append(_row("b", 0.5))
    assert [r["status"] for r in store.rows()] == [STATUS_FAILED, STATUS_OK, STATUS_OK]
    latest = store.latest()
    assert list(latest["key"]) == ["a", "b"] and list(latest["value"]) == [0.25, 0.5]
    assert list(store.successes()["key"]) == ["a", "b"]


def test_latest_keeps_last_failure_of_a_never_successful_cell(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    store.append(_row("a", status=STATUS_FAILED))
    store.append(_row("a", status=STATUS_FAILED))
    assert len(store.latest()) == 1 and store.latest()["status"].iloc[0] == STATUS_FAILED
    assert len(store.successes()) == 0


def test_torn_last_line_is_skipped_then_cut_off_by_the_next_append(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    store.append(_row("a"))
    full = json.dumps(_row("b")).encode()
    with open(store.path, "ab") as handle:          # what a power cut in the middle of a write leaves
        handle.write(full[: len(full) // 2])
    assert [r["key"] for r in store.rows()] == ["a"] and store.skipped_lines == 1
    assert store.append(_row("c"))
    assert [r["key"] for r in store.rows()] == ["a", "c"] and store.skipped_lines == 0
    assert store.path.read_bytes().count(b"\n") == 2


def test_foreign_or_incomplete_json_lines_are_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('[1, 2]\n{"key": "x"}\nnot json\n')
    store = ResultsStore(path)
    assert store.rows() == [] and store.skipped_lines == 3
    with pytest.raises(ValueError, match="lacks"):
        store.append({"key": "x", "status": "ok"})


_APPENDER = textwrap.dedent("""
    import sys
    from benchmarks.results import ResultsStore
    store = ResultsStore(sys.argv[1])
    payload = "x" * int(sys.argv[3])
    i = 0
    while True:
        row = {"store_version": 1, "key": f"{sys.argv[2]}-{i}", "status": "ok", "encoder": "e", "task": "t",
               "mode": "probe", "protocol": "p", "seed": 0, "fold": None, "payload": payload, "i": i}
        store.append(row)
        i += 1
""")


def _spawn_appender(store: Path, prefix: str, payload: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", _APPENDER, str(store), prefix, str(payload)], env=env)


def test_kill_minus_9_while_appending_leaves_only_complete_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    # two writers with large rows (200 kB each, many write() pages) share the store; both are SIGKILLed mid-loop
    procs = [_spawn_appender(path, name, 200_000) for name in ("a", "b")]
    deadline = time.time() + 20
    while time.time() < deadline and (not path.exists() or path.stat().st_size < 4_000_000):
        time.sleep(0.05)
    for proc in procs:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = ResultsStore(path)
    rows = store.rows()
    assert len(rows) >= 10, "the writers did not get going"
    # Linux may cut a 200 kB write short on SIGKILL: at most the last line is torn, and never parses as a row
    assert store.skipped_lines <= 1
    assert (store.skipped_lines == 1) == (not path.read_bytes().endswith(b"\n"))
    assert store.append({**rows[0], "key": "after-the-kill"})      # the next writer cuts the torn tail off
    rows = store.rows()
    assert store.skipped_lines == 0 and rows[-1]["key"] == "after-the-kill"
    rows = rows[:-1]
    assert all(len(r["payload"]) == 200_000 for r in rows)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))
    for prefix in ("a", "b"):    # each writer's rows are a gap-free prefix of its sequence: nothing lost between
        seq = sorted(r["i"] for r in rows if r["key"].startswith(prefix + "-"))
        assert seq == list(range(len(seq)))
    assert path.read_bytes().endswith(b"\n")


def test_concurrent_writers_of_the_same_cells_store_each_once(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    script = textwrap.dedent("""
        import sys
        from benchmarks.results import ResultsStore
        store = ResultsStore(sys.argv[1])
        for i in range(150):
            store.append({"store_version": 1, "key": f"cell-{i}", "status": "ok", "encoder": "e", "task": "t",
                          "mode": "probe", "protocol": "p", "seed": 0, "fold": None, "writer": sys.argv[2]})
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(w)], env=env) for w in range(3)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    keys = [r["key"] for r in ResultsStore(path).rows()]
    assert sorted(keys) == sorted(f"cell-{i}" for i in range(150))


def test_file_sha256_is_the_content_hash_and_follows_changes(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"weights v1")
    assert file_sha256(path) == hashlib.sha256(b"weights v1").hexdigest()
    path.write_bytes(b"weights v2, longer")
    assert file_sha256(path) == hashlib.sha256(b"weights v2, longer").hexdigest()
    with pytest.raises(Exception, match="does not exist"):
        file_sha256(tmp_path / "missing.pt")


def test_cell_key_is_stable_and_identifies_what_matters() -> None:
    key = cell_key(CELL, "0" * 64)
    # pinned: changing the key's recipe would silently rerun (or orphan) every stored cell
    assert key == "f24201c66a793d4e56465e69ae2ce8bf"
    same = TaskCell(EncoderSpec("enc", "/elsewhere/ckpt.pt"), "esc50", "finetune", "esc50/train4-test1", seed=1,
                    fold=3, data_root="/mnt/moved/ESC-50-master", overrides={"epochs": 2})
    assert cell_key(same, "0" * 64) == key              # path and data root are not identity, content is
    def variant(encoder: EncoderSpec = EncoderSpec("enc", "/c"), **changes) -> TaskCell:
        fields = dict(task="esc50", mode="finetune", protocol="esc50/train4-test1", seed=1, fold=3,
                      overrides={"epochs": 2})
        fields.update(changes)
        return TaskCell(encoder, **fields)

    variants = [variant(seed=2), variant(fold=4), variant(mode="probe"), variant(protocol="hear/esc50"),
                variant(overrides={"epochs": 3}), variant(recipe="other.yaml"),
                variant(EncoderSpec("enc", "/c", "scratch")), variant(EncoderSpec("other", "/c"))]
    keys = {cell_key(v, "0" * 64) for v in variants} | {cell_key(CELL, "1" * 64), cell_key(CELL, "0" * 64, "d")}
    assert key not in keys and len(keys) == len(variants) + 2
    # with a resolved-recipe digest, the digest is the identity: naming the same recipe another way is the same cell
    renamed = variant(recipe="esc50_finetune", overrides={"epochs": 2, "lr": 1e-3})
    assert cell_key(renamed, "0" * 64, "d") == cell_key(CELL, "0" * 64, "d") != cell_key(CELL, "0" * 64, "e")
