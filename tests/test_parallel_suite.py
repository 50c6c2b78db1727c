"""Parallel suites (benchmarks/parallel.py): a local pool of 2 worker processes runs every cell once with the
coordinator as the only store writer; kill -9 of a worker or of the coordinator loses no finished cell and leaves no
half-written row; rows a dead coordinator never stored are harvested; submitit's debug executor runs the same cells.

The runners are test-only functions imported by name in the worker processes (tests/ is put on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.parallel import ROW_FILE, cell_job, runner_spec
from benchmarks.parallel_config import ParallelConfig, parse_parallel
from benchmarks.results import STATUS_FAILED, STATUS_OK, ResultsStore
from benchmarks.suite import load_suite, parse_suite, plan_suite, run_suite
from tasks.api import TaskCell, TaskResult
from upstream.errors import AsitError

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def pid_test_runner(cell: TaskCell, work_dir: Path) -> TaskResult:
    """TEST ONLY: logs (cell, pid) to $ASIT_TEST_RUNNER_LOG, sleeps $ASIT_TEST_CELL_SECONDS, kills its own process
    for the seed in $ASIT_TEST_KILL_SEED, returns a number known per cell."""
    with open(os.environ["ASIT_TEST_RUNNER_LOG"], "a") as handle:
        handle.write(json.dumps({"task": cell.task, "seed": cell.seed, "pid": os.getpid()}) + "\n")
    time.sleep(float(os.environ.get("ASIT_TEST_CELL_SECONDS", "0")))
    if str(cell.seed) == os.environ.get("ASIT_TEST_KILL_SEED"):
        os.kill(os.getpid(), signal.SIGKILL)
    return TaskResult("accuracy", 0.1 * cell.seed + (0.01 if cell.task == "voxceleb1" else 0.0))


@pytest.fixture()
def suite_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Six cells (two tasks x three seeds, probe only) whose runner the workers import by name."""
    (tmp_path / "encoder.pt").write_bytes(b"tiny encoder weights")
    for task in ("voxceleb1", "speechcommands_v1"):
        (tmp_path / "data" / task).mkdir(parents=True)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{TESTS}")
    monkeypatch.setenv("ASIT_TEST_RUNNER_LOG", str(tmp_path / "calls.jsonl"))
    return {"name": "par", "encoders": {"pre": {"path": f"{tmp_path}/encoder.pt"}},
            "data": {task: str(tmp_path / "data" / task) for task in ("voxceleb1", "speechcommands_v1")},
            "tasks": {"voxceleb1": {}, "speechcommands_v1": {}}, "modes": ["probe"], "seeds": [1, 2, 3],
            "results": f"{tmp_path}/results.jsonl", "work_dir": f"{tmp_path}/work",
            "runner": "test_parallel_suite:pid_test_runner", "parallel": {"workers": 2}}


def _calls(tmp_path: Path) -> list[dict]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_two_local_workers_run_every_cell_once_in_their_own_processes(suite_raw: dict, tmp_path: Path) -> None:
    suite = parse_suite(suite_raw)
    assert suite.parallel == ParallelConfig("local", 2)
    lines: list[str] = []
    report = run_suite(suite, progress=False, log=lines.append)
    planned = plan_suite(suite)
    rows = ResultsStore(suite.results).rows()
    assert sorted(r["key"] for r in rows) == sorted(c.key for c in planned) and report.complete
    assert all(r["status"] == STATUS_OK for r in rows)
    by_key = {c.key: c.cell for c in planned}
    assert all(r["value"] == pytest.approx(0.1 * by_key[r["key"]].seed + (0.01 if r["task"] == "voxceleb1" else 0))
               for r in rows)
    pids = {call["pid"] for call in _calls(tmp_path)}
    assert len(_calls(tmp_path)) == 6 and os.getpid() not in pids and len(pids) == 2   # two workers, kept
    status = [line for line in lines if line.startswith("[")]
    assert len(status) == 6 and status[-1].startswith("[6/6] ok ") and "accuracy 0." in status[-1]
    assert "(local, 2 at a time)" in lines[0]
    assert not list((tmp_path / "work").rglob(ROW_FILE))          # every row file was stored and removed


def test_a_killed_worker_is_a_failed_cell_and_the_rerun_completes_it(suite_raw: dict, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASIT_TEST_KILL_SEED", "2")
    suite = parse_suite(suite_raw)
    lines: list[str] = []
    report = run_suite(suite, progress=False, log=lines.append)
    rows = ResultsStore(suite.results).rows()
    failed = [r for r in rows if r["status"] == STATUS_FAILED]
    assert {r["seed"] for r in failed} == {2} and len(failed) == 2 and not report.complete
    assert all("killed by signal SIGKILL" in r["error"] for r in failed)
    assert len({c["pid"] for c in _calls(tmp_path)}) >= 3              # a new worker took the dead one's slot
    assert sum(r["status"] == STATUS_OK for r in rows) == 4       # the other workers' cells are unaffected
    assert any(line.startswith("[") and " FAIL " in line and "SIGKILL" in line for line in lines)

    monkeypatch.delenv("ASIT_TEST_KILL_SEED")
    before = len(_calls(tmp_path))
    assert run_suite(parse_suite(suite_raw), progress=False, log=lambda m: None).complete
    assert len(_calls(tmp_path)) == before + 2                     # only the two failed cells ran again
    assert len(ResultsStore(suite.results).finished_keys()) == 6


@pytest.mark.slow   # worker processes import the task stack: ~20-35 s on 2 cores
def test_rows_a_dead_coordinator_never_stored_are_harvested_not_rerun(suite_raw: dict, tmp_path: Path) -> None:
    suite = parse_suite(suite_raw)
    planned = plan_suite(suite)
    cell_job(planned[0], suite.runner, str(suite.work_dir), suite.name)     # as a worker would have, then no store
    failed_row_cell = planned[1]
    failed_row_cell.work_dir(suite.work_dir).mkdir(parents=True)
    (failed_row_cell.work_dir(suite.work_dir) / ROW_FILE).write_text(json.dumps(
        {"key": failed_row_cell.key, "status": STATUS_FAILED, "error": "x"}))
    assert len(_calls(tmp_path)) == 1
    assert run_suite(suite, progress=False, log=lambda m: None).complete
    calls = _calls(tmp_path)
    assert len(calls) == 6                                          # 1 before + 5 now: the harvested one not rerun
    assert len(ResultsStore(suite.results).finished_keys()) == 6    # ... and a left failed row is run again


@pytest.mark.slow   # worker processes import the task stack: ~20-35 s on 2 cores
def test_kill_minus_9_of_the_coordinator_loses_nothing_and_takes_its_workers(suite_raw: dict, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite_raw))
    cmd = [sys.executable, "-m", "upstream.cli", "bench", str(path), "--no-progress"]
    env = dict(os.environ, ASIT_TEST_CELL_SECONDS="1.5", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = tmp_path / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(ResultsStore(results).rows()) < 2:
        time.sleep(0.05)
    while time.time() < deadline and len(_calls(tmp_path)) < 4:       # two more cells running
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = ResultsStore(results).finished_keys()
    assert 2 <= len(done_before) < 6, "the kill did not land in the middle of the suite"
    running = {c["pid"] for c in _calls(tmp_path)}
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in running), "a worker outlived its coordinator"

    monkeypatch.setenv("ASIT_TEST_CELL_SECONDS", "0")
    rerun = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=tmp_path, capture_output=True,
                           text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    rows = ResultsStore(results).rows()
    assert sorted(r["key"] for r in rows) == sorted(c.key for c in plan_suite(load_suite(path)))   # each once
    assert all(r["status"] == STATUS_OK for r in rows)
    assert f"{len(done_before)} already in" in rerun.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())   # a zombie is dead


def test_submitit_debug_executor_runs_the_same_cells(suite_raw: dict, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    suite = parse_suite({**suite_raw, "parallel": {"backend": "debug"}})
    lines: list[str] = []
    assert run_suite(suite, progress=False, log=lines.append).complete
    rows = ResultsStore(suite.results).rows()
    assert sorted(r["key"] for r in rows) == sorted(c.key for c in plan_suite(suite))
    assert {c["pid"] for c in _calls(tmp_path)} == {os.getpid()}      # the debug executor runs in-process
    assert sum(line.startswith("[") for line in lines) == 6


def test_parallel_section_is_checked_and_runners_must_be_importable() -> None:
    assert parse_parallel(None) == ParallelConfig()
    assert parse_parallel({"devices": "0,1"}) == ParallelConfig("local", 1, ("0", "1"))
    assert parse_parallel({"devices": [0, 1]}).slots == 2
    with pytest.raises(AsitError, match="parallel.backend must be one of"):
        parse_parallel({"backend": "mpi"})
    with pytest.raises(AsitError, match=r"unknown key\(s\) \['gpus'\]"):
        parse_parallel({"gpus": 2})
    with pytest.raises(AsitError, match="parallel.workers must be positive"):
        parse_parallel({"workers": 0})
    assert runner_spec(pid_test_runner) == "test_parallel_suite:pid_test_runner"
    with pytest.raises(AsitError, match="cannot run in a worker process"):
        runner_spec(lambda cell, work_dir: None)
