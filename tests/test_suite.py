"""Suites: grid expansion, stable keys, resume, failed cells, and kill -9 in the middle of `asit bench`.

The suite's runner is injectable; the runners here are test-only functions (`recording_test_runner`) that return
a number derived from the cell, so that store contents can be checked exactly.
"""

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

from benchmarks.results import STATUS_FAILED, STATUS_OK, ResultsStore
from benchmarks.suite import TASK_PROTOCOLS, load_suite, parse_suite, plan_suite, run_suite
from tasks.api import TaskCell, TaskResult
from upstream.cli import main as cli_main
from upstream.errors import AsitError

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def expected_value(cell: TaskCell) -> float:
    """A distinct, known number per cell."""
    return round(0.1 * cell.seed + 0.01 * (cell.fold or 0) + (0.5 if cell.mode == "finetune" else 0.0), 6)


def recording_test_runner(cell: TaskCell, work_dir: Path) -> TaskResult:
    """TEST ONLY: logs the call to $ASIT_TEST_RUNNER_LOG, sleeps $ASIT_TEST_CELL_SECONDS, returns expected_value."""
    log = os.environ.get("ASIT_TEST_RUNNER_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps({"encoder": cell.encoder.name, "task": cell.task, "mode": cell.mode,
                                     "seed": cell.seed, "fold": cell.fold, "work_dir": str(work_dir)}) + "\n")
    time.sleep(float(os.environ.get("ASIT_TEST_CELL_SECONDS", "0")))
    if cell.task == os.environ.get("ASIT_TEST_FAIL_TASK"):
        raise RuntimeError(f"test failure on {cell.task}")
    return TaskResult("accuracy", expected_value(cell), {"work_dir": str(work_dir)})


@pytest.fixture()
def layout(tmp_path: Path) -> dict:
    """A checkpoint file and data roots (the test runner never reads them; planning checks they exist)."""
    ckpt = tmp_path / "encoder.pt"
    ckpt.write_bytes(b"tiny encoder weights")
    data = {}
    for task in ("esc50", "voxceleb1", "speechcommands_v1"):
        (tmp_path / "data" / task).mkdir(parents=True)
        data[task] = str(tmp_path / "data" / task)
    raw = {
        "name": "unit",
        "vars": {"root": str(tmp_path)},
        "encoders": {"pre": {"path": "{root}/encoder.pt", "pretraining": "unit corpus"},
                     "scr": {"path": "{root}/encoder.pt", "init": "scratch"}},
        "data": data,
        "tasks": {"esc50": {}, "voxceleb1": {"overrides": {"finetune": {"epochs": 5}}}},
        "modes": ["probe", "finetune"],
        "seeds": [1, 2],
        "overrides": {"finetune": {"epochs": 1, "lr": 0.01}, "probe": {"max_iter": 50}},
        "results": "{root}/results.jsonl",
        "work_dir": "{root}/work",
    }
    return {"raw": raw, "root": tmp_path, "ckpt": ckpt}


def test_grid_expansion_folds_seeds_modes_and_overrides(layout: dict) -> None:
    suite = parse_suite(layout["raw"])
    cells = plan_suite(suite)
    # 2 encoders × 2 modes × 2 seeds × (5 ESC-50 folds + 1 SID)
    assert len(cells) == 2 * 2 * 2 * 6
    esc = [c.cell for c in cells if c.cell.task == "esc50" and c.cell.mode == "finetune" and c.cell.seed == 1
           and c.cell.encoder.name == "pre"]
    assert [c.fold for c in esc] == [1, 2, 3, 4, 5]
    assert {c.protocol for c in esc} == {TASK_PROTOCOLS["esc50"][0]}
    sid = [c.cell for c in cells if c.cell.task == "voxceleb1"]
    assert {c.fold for c in sid} == {None} and {c.protocol for c in sid} == {"voxceleb1/iden-split"}
    # per-mode overrides for every task, per-task overrides on top
    assert {json.dumps(c.overrides, sort_keys=True) for c in sid if c.mode == "finetune"} == \
        {'{"epochs": 5, "lr": 0.01}'}
    assert {json.dumps(c.cell.overrides) for c in cells if c.cell.task == "esc50" and c.cell.mode == "probe"} == \
        {'{"max_iter": 50}'}
    assert {c.cell.encoder.init for c in cells} == {"pretrained", "scratch"}
    assert {c.pretraining for c in cells} == {"unit corpus", "none (scratch)"}
    assert len({c.key for c in cells}) == len(cells)
    assert len({c.work_dir(suite.work_dir) for c in cells}) == len(cells)
    assert cells[0].cell.encoder.path == str(layout["ckpt"])


def test_keys_are_stable_across_loads_and_processes(layout: dict, tmp_path: Path) -> None:
    keys = [c.key for c in plan_suite(parse_suite(layout["raw"]))]
    assert keys == [c.key for c in plan_suite(parse_suite(layout["raw"]))]
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(layout["raw"]))
    script = ("import sys; from benchmarks.suite import load_suite, plan_suite; "
              "print(' '.join(c.key for c in plan_suite(load_suite(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", script, str(suite_file)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="7"), check=True)
    assert out.stdout.split() == keys
    # a different checkpoint content is a different cell
    layout["ckpt"].write_bytes(b"retrained weights")
    assert not set(keys) & {c.key for c in plan_suite(parse_suite(layout["raw"]))}


def test_resume_skips_finished_cells(layout: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("ASIT_TEST_RUNNER_LOG", str(log))
    suite = parse_suite(layout["raw"])
    first = run_suite(suite, runner=recording_test_runner, progress=False, log=lambda m: None)
    assert first.planned == 48 and len(first.succeeded) == 48 and first.skipped == 0 and first.complete
    assert len(log.read_text().splitlines()) == 48
    second = run_suite(suite, runner=recording_test_runner, progress=False, log=lambda m: None)
    assert second.skipped == 48 and not second.succeeded
    assert len(log.read_text().splitlines()) == 48            # no cell ran again
    rows = ResultsStore(suite.results).rows()
    assert len(rows) == 48 and all(r["status"] == STATUS_OK for r in rows)
    plan = {c.key: c.cell for c in plan_suite(suite)}
    assert all(r["value"] == pytest.approx(expected_value(plan[r["key"]])) for r in rows)
    assert all(r["extra"]["work_dir"].startswith(str(suite.work_dir)) for r in rows)
    # growing the grid runs only the new cells
    layout["raw"]["seeds"] = [1, 2, 3]
    third = run_suite(parse_suite(layout["raw"]), runner=recording_test_runner, progress=False, log=lambda m: None)
    assert third.skipped == 48 and len(third.succeeded) == 24


def test_failed_cells_are_recorded_reported_and_retried(layout: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASIT_TEST_FAIL_TASK", "voxceleb1")
    suite = parse_suite(layout["raw"])
    messages: list[str] = []
    report = run_suite(suite, runner=recording_test_runner, progress=False, log=messages.append)
    assert len(report.failed) == 8 and len(report.succeeded) == 40 and not report.complete
    assert all("RuntimeError: test failure on voxceleb1" in error for _, error in report.failed)
    assert "FAILED pre voxceleb1" in messages[-1] and "rerun" in messages[-1]
    failed_rows = [r for r in ResultsStore(suite.results).rows() if r["status"] == STATUS_FAILED]
    assert len(failed_rows) == 8 and all(r["value"] is None and "Traceback" in r["error"] for r in failed_rows)
    monkeypatch.delenv("ASIT_TEST_FAIL_TASK")
    retry = run_suite(suite, runner=recording_test_runner, progress=False, log=lambda m: None)
    assert retry.skipped == 40 and len(retry.succeeded) == 8 and retry.complete
    store = ResultsStore(suite.results)
    assert len(store.successes()) == 48 and len(store.rows()) == 56     # the failures stay as history


def test_a_runner_returning_nonsense_is_a_failed_cell(layout: dict) -> None:
    layout["raw"]["tasks"] = {"voxceleb1": {}}
    suite = parse_suite(layout["raw"])

    def nan_test_runner(cell: TaskCell, work_dir: Path) -> TaskResult:
        return TaskResult("accuracy", float("nan"))

    report = run_suite(suite, runner=nan_test_runner, progress=False, log=lambda m: None)
    assert len(report.failed) == report.planned == 8 and "finite value" in report.failed[0][1]


def test_recipes_are_resolved_at_planning_and_their_content_is_part_of_the_key(layout: dict,
                                                                             tmp_path: Path) -> None:
    raw = layout["raw"]
    with pytest.raises(AsitError, match=r"suite <suite>: esc50 finetune: .*epoch"):
        plan_suite(parse_suite({**raw, "overrides": {"finetune": {"epoch": 3}}}))    # typo caught before running
    recipe = tmp_path / "my_esc50.yaml"
    recipe.write_text("inherit: esc50_finetune\nweight_decay: 0.01\n")
    custom = {**raw, "tasks": {"esc50": {"recipes": {"finetune": str(recipe)}}}}
    cells = plan_suite(parse_suite(custom))
    assert {c.cell.recipe for c in cells if c.cell.mode == "finetune"} == {str(recipe)}
    assert {c.cell.recipe for c in cells if c.cell.mode == "probe"} == {""}
    recipe.write_text("inherit: esc50_finetune\nweight_decay: 0.02\n")        # an edited recipe file
    edited = plan_suite(parse_suite(custom))
    changed = {a.key for a, b in zip(cells, edited) if a.key != b.key}
    assert changed == {c.key for c in cells if c.cell.mode == "finetune"}
    assert len({c.recipe_digest for c in edited}) == 2


def test_bad_suites_fail_before_running_with_the_culprit_named(layout: dict, tmp_path: Path) -> None:
    raw = layout["raw"]
    with pytest.raises(AsitError, match=r"data\.speechcommands_v2=PATH"):
        parse_suite({**raw, "tasks": {"speechcommands_v2": {}}})
    with pytest.raises(AsitError, match="unknown task 'esc'"):
        parse_suite({**raw, "tasks": {"esc": {}}})
    with pytest.raises(AsitError, match="unknown key"):
        parse_suite({**raw, "seed": [1]})
    with pytest.raises(AsitError, match="modes must be"):
        parse_suite({**raw, "modes": ["linear"]})
    with pytest.raises(AsitError, match=r"data\.esc50 is not set.*--set data\.esc50="):
        parse_suite({**raw, "data": {**raw["data"], "esc50": "???"}})
    with pytest.raises(AsitError, match=r"--set vars\.base="):
        parse_suite({**raw, "vars": {**raw["vars"], "base": "???"},
                     "data": {**raw["data"], "esc50": "{base}/ESC-50-master"}})
    with pytest.raises(AsitError, match=r"data root\(s\) not found: data\.esc50="):
        plan_suite(parse_suite({**raw, "data": {**raw["data"], "esc50": str(tmp_path / "nope")}}))
    with pytest.raises(AsitError, match=r"encoders\.x\.path: checkpoint .*missing\.pt does not exist"):
        plan_suite(parse_suite({**raw, "encoders": {"x": {"path": str(tmp_path / "missing.pt")}}}))
    with pytest.raises(AsitError, match="repeats cells"):
        plan_suite(parse_suite({**raw, "tasks": {"esc50": {"folds": [1, 1]}}}))
    with pytest.raises(AsitError, match="runner"):
        run_suite(parse_suite({**raw, "runner": "no_such_module_xyz:run"}), progress=False, log=lambda m: None)


def test_shipped_suites_parse_and_need_their_paths_set(tmp_path: Path) -> None:
    with pytest.raises(AsitError, match=r"vars\.checkpoint"):
        load_suite("paper_gpu")
    suite = load_suite("paper_gpu", ["vars.data=/datasets", f"vars.checkpoint={tmp_path}/c.pt",
                                     "data.esc50=/elsewhere/ESC-50-master"])
    assert {t.task: t.data_root for t in suite.tasks}["esc50"] == "/elsewhere/ESC-50-master"
    assert {t.task: t.data_root for t in suite.tasks}["voxceleb1"] == "/datasets/VoxCeleb1"
    assert {t.task for t in suite.tasks} == set(TASK_PROTOCOLS) and suite.overrides == {}
    without = load_suite("paper_gpu", ["vars.data=/d", "vars.checkpoint=/c.pt", "tasks.as20k=false"])
    assert {t.task for t in without.tasks} == set(TASK_PROTOCOLS) - {"as20k"}
    assert suite.results == Path("results/paper_gpu.jsonl")
    demo = load_suite("demo_cpu", ["vars.demo=/tmp/d"])
    assert {t.task for t in demo.tasks} == set(TASK_PROTOCOLS) and set(demo.modes) == {"probe", "finetune"}
    assert [e.spec.init for e in demo.encoders] == ["pretrained", "scratch", "fbank_stats"] + ["pretrained"] * 3 + [
        "scratch"]
    assert [e.spec.path for e in demo.encoders] == ["/tmp/d/pretrain/encoder.pt"] * 3 + [
        "/tmp/d/pretrain_acm_sskd/encoder.pt", "/tmp/d/pretrain_supmam/encoder.pt"] + [
        "/tmp/d/pretrain_conformer/encoder.pt"] * 2   # ViT objectives share the floors; the conformer has its own
    paper = {e.spec.name: e for e in suite.encoders}
    assert paper["fbank-stats"].spec.init == "fbank_stats" and paper["fbank-stats"].pretraining.startswith("none")
    devsets = load_suite("devsets_cpu", ["vars.encoder=/e.pt"])
    assert [e.spec.init for e in devsets.encoders] == ["pretrained", "scratch", "fbank_stats"]
    assert {t.task: t.data_root for t in devsets.tasks}["voxceleb1"] == "data/devsets/VoxCeleb1"
    assert demo.results == Path("/tmp/d/leaderboard/results.jsonl")


def _write_cli_suite(layout: dict, tmp_path: Path) -> Path:
    raw = dict(layout["raw"], runner="test_suite:recording_test_runner", seeds=[1])
    raw["tasks"] = {"esc50": {}, "voxceleb1": {}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _bench_env(log: Path, seconds: float) -> dict:
    return dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{TESTS}", ASIT_TEST_RUNNER_LOG=str(log),
                ASIT_TEST_CELL_SECONDS=str(seconds), PYTHONUNBUFFERED="1")


def test_kill_minus_9_mid_suite_then_rerun_completes_every_cell_once(layout: dict, tmp_path: Path) -> None:
    suite_file = _write_cli_suite(layout, tmp_path)
    log = tmp_path / "calls.jsonl"
    results = layout["root"] / "results.jsonl"
    cmd = [sys.executable, "-m", "upstream.cli", "bench", str(suite_file), "--no-progress"]
    proc = subprocess.Popen(cmd, env=_bench_env(log, 0.5), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and (len(ResultsStore(results).rows()) < 4):
        time.sleep(0.05)
    time.sleep(0.25)                                         # land inside a cell, not between two
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = ResultsStore(results).finished_keys()
    planned = plan_suite(load_suite(suite_file))
    assert 4 <= len(done_before) < len(planned), "the kill did not land in the middle of the suite"
    calls_before = len(log.read_text().splitlines())
    assert len(done_before) <= calls_before <= len(done_before) + 1   # + the cell that was running, if any

    rerun = subprocess.run(cmd, env=_bench_env(log, 0.0), cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    rows = ResultsStore(results).rows()
    keys = [r["key"] for r in rows]
    assert sorted(keys) == sorted(c.key for c in planned)     # every cell exactly once, none lost
    assert all(r["status"] == STATUS_OK for r in rows)
    calls = log.read_text().splitlines()
    assert len(calls) == calls_before + len(planned) - len(done_before)   # finished cells were not rerun
    assert f"{len(done_before)} already in" in rerun.stdout


def test_cli_dry_run_lists_cells_and_failures_set_the_exit_code(layout: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    suite_file = _write_cli_suite(layout, tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    assert cli_main(["bench", str(suite_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("todo ") == 24 and "24 cells, 0 done" in out and "pre esc50 probe seed 1 fold 5" in out
    monkeypatch.setenv("ASIT_TEST_FAIL_TASK", "voxceleb1")
    assert cli_main(["bench", str(suite_file), "--no-progress"]) == 1
    assert "FAILED" in capsys.readouterr().out
    monkeypatch.delenv("ASIT_TEST_FAIL_TASK")
    assert cli_main(["bench", str(suite_file), "--no-progress", "--set", "seeds=[1]"]) == 0
    assert cli_main(["bench", str(suite_file), "--dry-run"]) == 0
    assert "24 cells, 24 done" in capsys.readouterr().out
    assert cli_main(["bench"]) == 2
    assert "either a SUITE, --hear-scores DIR or --s3prl-runs" in capsys.readouterr().err


def test_demo_stage_writes_the_leaderboard_into_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import fields
    from types import SimpleNamespace

    from benchmarks.demo_stage import CORPUS_FIELDS, stage_leaderboard
    from upstream.demo import DemoContext

    from tasks.corpus import CorpusPaths

    assert set(CORPUS_FIELDS) == set(TASK_PROTOCOLS)
    assert set(CORPUS_FIELDS.values()) <= {f.name for f in fields(CorpusPaths)}
    roots = {}
    for task, name in CORPUS_FIELDS.items():
        roots[name] = tmp_path / "corpus {odd}" / task      # braces in paths must survive the suite templating
        roots[name].mkdir(parents=True)
    encoder = tmp_path / "pretrain" / "encoder.pt"
    encoder.parent.mkdir()
    encoder.write_bytes(b"demo encoder")
    ctx = DemoContext(out_dir=tmp_path / "demo", corpus=SimpleNamespace(**roots), encoder=encoder)
    # what the HEAR stage leaves: a task folder scored by heareval's predictions runner (its file format)
    hear_task = ctx.out_dir / "hear" / "embeddings" / "asit_hear" / "esc50"
    hear_task.mkdir(parents=True)
    (hear_task / "task_metadata.json").write_text(json.dumps(
        {"task_name": "esc50", "split_mode": "presplit_kfold", "splits": [f"fold{i:02d}" for i in range(5)],
         "evaluation": ["top1_acc", "mAP"]}))
    (hear_task / "test.predicted-scores.json").write_text(json.dumps(
        {**{f"fold{i:02d}": {"test_top1_acc": 0.5 + i / 10, "test_score": 0.5 + i / 10, "validation_score": 0.4,
                             "epoch": 3, "time_in_min": 0.1} for i in range(5)},
         "aggregated_scores": {"test_top1_acc_mean": 0.7}, "hparams": {}, "score_mode": "test"}))
    ctx.report["hear"] = {"module": "asit_hear"}
    stage_leaderboard(ctx, runner=recording_test_runner)
    board = ctx.report["leaderboard"]
    assert "[hear/esc50/5fold-3/1/1]" in board and "70.0 ± 15.8" in board      # heareval's 5 folds, mean ± std
    assert "asit-tiny-demo" in board and "scratch-tiny-demo" in board and "quoted" in board
    assert all(f"[{protocol}]" in board for protocol, _ in TASK_PROTOCOLS.values())
    cells = ctx.report["leaderboard_cells"]
    assert cells["failed"] == 0 and cells["ran"] == cells["planned"] == 3 * 2 * 9   # 3 encoders × 2 modes × 1 seed
    assert "fbank-stats" in board and "floor: fbank stats" in board and "floor: random init" in board
    assert Path(ctx.report["leaderboard_files"]["png"]).is_file()
    assert Path(ctx.report["leaderboard_files"]["results"]).parent == ctx.out_dir / "leaderboard"
    # a rerun runs nothing, and rows of an earlier demo version (another recipe) in the same store stay out
    store = ResultsStore(ctx.report["leaderboard_files"]["results"])
    stale = dict(next(r for r in store.rows() if r["task"] == "esc50"), key="0" * 32, recipe_digest="old", value=0.0)
    assert store.append(stale)
    stage_leaderboard(ctx, runner=recording_test_runner)
    assert ctx.report["leaderboard_cells"]["skipped"] == cells["planned"]
    assert "· recipe" not in ctx.report["leaderboard"] and ctx.report["leaderboard"] == board
    # a failing cell still leaves the table and then stops the demo with the reason
    rows = ResultsStore(ctx.report["leaderboard_files"]["results"]).rows()
    rows_path = Path(ctx.report["leaderboard_files"]["results"])
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["task"] != "voxceleb1"))
    monkeypatch.setenv("ASIT_TEST_FAIL_TASK", "voxceleb1")
    with pytest.raises(AsitError, match="leaderboard cell.* failed.*rerun `asit demo`"):
        stage_leaderboard(ctx, runner=recording_test_runner)
    assert "voxceleb1/iden-split" not in ctx.report["leaderboard"] and "SC-V2" in ctx.report["leaderboard"]
    assert Path(ctx.report["leaderboard_files"]["markdown"]).is_file()
