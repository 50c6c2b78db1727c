"""Reliability of the command line: one-line errors naming the file or argument (export into a folder or onto a full
disk, unwritable table output, a binary suite file, --sample-rate 0), no traceback when the reader of a pipe goes
away, the ordinary mode on written files, concurrent suites counting the rows the store refused, and commands that
do not import TensorFlow."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks.results import ResultsStore, cell_key, make_row
from benchmarks.suite import TASK_PROTOCOLS, format_report, parse_suite, plan_suite, run_suite
from tasks.api import EncoderSpec, TaskCell, TaskResult
from upstream.atomic import atomic_write, atomic_write_text
from upstream.cli import main
from upstream.errors import AsitError

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


def _store_with_rows(path: Path, checkpoint: Path) -> ResultsStore:
    store = ResultsStore(path)
    for seed, value in ((1, 0.5), (2, 0.7)):
        cell = TaskCell(EncoderSpec("pre", str(checkpoint)), "voxceleb1", "probe", TASK_PROTOCOLS["voxceleb1"][0],
                        seed, None)
        assert store.append(make_row(cell, cell_key(cell, "a" * 64), "a" * 64, result=TaskResult("accuracy", value)))
    return store


@pytest.fixture()
def umask_022():  # type: ignore[no-untyped-def]
    before = os.umask(0o022)
    yield
    os.umask(before)


# --------------------------------------------------------------------------------------------- asit export

def test_export_into_an_existing_folder_is_one_line_naming_it(capsys, tmp_path, tiny_encoder_file) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    assert main(["export", str(tiny_encoder_file), str(folder)]) == 2
    assert _one_line_error(capsys) == (f"asit export: error: OUT {folder} is a folder; give the file to write, "
                                       f"e.g. {folder / 'encoder.pt'}")
    assert list(folder.iterdir()) == []


def test_export_on_a_full_disk_names_the_target_and_leaves_no_file(capsys, tmp_path, tiny_encoder_file,
                                                                   monkeypatch) -> None:
    import upstream.atomic

    real_fdopen = os.fdopen

    class FullDisk:                  # the file system takes 4 KiB, then answers ENOSPC (the real torch.save runs)
        def __init__(self, handle) -> None:
            self.handle, self.written = handle, 0

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.handle, name)

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
            self.handle.close()

    monkeypatch.setattr(upstream.atomic.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    out = tmp_path / "out" / "encoder.pt"
    assert main(["export", str(tiny_encoder_file), str(out)]) == 2
    assert _one_line_error(capsys) == f"asit export: error: cannot write {out}: No space left on device"
    assert list(out.parent.iterdir()) == []          # neither the target nor the temporary file


def test_export_into_an_unwritable_folder_names_the_target(capsys, tmp_path, tiny_encoder_file,
                                                           monkeypatch) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:                             # root writes into read-only folders: refuse as the OS would
        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder / ".encoder.pt.x.tmp"))
        monkeypatch.setattr(tempfile, "mkstemp", denied)
    try:
        assert main(["export", str(tiny_encoder_file), str(folder / "encoder.pt")]) == 2
        assert _one_line_error(capsys) == f"asit export: error: cannot write {folder / 'encoder.pt'}: Permission denied"
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("value", ["0", "-16000", "16k"])
def test_export_sample_rate_must_be_a_positive_integer(capsys, tmp_path, tiny_encoder_file, value) -> None:
    out = tmp_path / "encoder.pt"
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tiny_encoder_file), str(out), f"--sample-rate={value}"])
    assert exc.value.code == 2
    assert f"asit export: error: argument --sample-rate: must be a positive integer, got '{value}'" in \
        capsys.readouterr().err
    assert not out.exists()


def test_perf_out_that_is_a_folder_is_refused_before_benchmarking(capsys, tmp_path) -> None:
    args = ["perf", "--sizes", "tiny", "--precisions", "fp32", "--benches", "inference", "--repeats", "1",
            "--seconds", "1", "--batch", "1", "--out", str(tmp_path)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""                         # no benchmark ran
    assert captured.err == (f"asit perf: error: --out {tmp_path} is a folder; give the JSON file to write, e.g. "
                            f"{tmp_path / 'perf.json'}\n")
    with pytest.raises(SystemExit):
        main(["perf", "--repeats", "0", "--out", str(tmp_path / "perf.json")])
    assert "argument --repeats: must be a positive integer, got '0'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ atomic writes

def test_a_failed_atomic_write_keeps_the_old_file_and_removes_the_temporary(tmp_path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(AsitError) as exc:             # upstream.atomic.FileWriteError
        with atomic_write(target) as handle:
            handle.write(b"new, half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(exc.value) == f"cannot write {target}: No space left on device"
    assert isinstance(exc.value, AsitError) and isinstance(exc.value, OSError) and exc.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_atomic_write_names_a_file_standing_where_a_folder_should_be(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(AsitError, match=f"^cannot write {tmp_path / 'a.txt' / 'b' / 'c.txt'}: "
                                             f"{tmp_path / 'a.txt'} is a file, not a folder$"):
        atomic_write_text(tmp_path / "a.txt" / "b" / "c.txt", "y")


@pytest.mark.usefixtures("umask_022")
def test_written_files_get_the_ordinary_mode(capsys, tmp_path, tiny_encoder_file) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert main(["export", str(tiny_encoder_file), str(tmp_path / "encoder.pt")]) == 0
    assert stat.S_IMODE((tmp_path / "encoder.pt").stat().st_mode) == 0o644
    os.umask(0o027)                                   # the mask is read when writing, not fixed at 0644
    atomic_write_text(tmp_path / "a.txt", "y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


# ----------------------------------------------------------------------------------------------- asit table

def test_table_out_that_is_a_file_is_one_line(capsys, tmp_path) -> None:
    store = _store_with_rows(tmp_path / "results.jsonl", tmp_path / "encoder.pt")
    out = tmp_path / "leaderboard"
    out.write_text("not a folder")
    assert main(["table", "--results", str(store.path), "--out", str(out)]) == 2
    assert _one_line_error(capsys) == (f"asit table: error: output folder {out} is a file; --out names the folder the "
                                       "tables are written into")
    assert out.read_text() == "not a folder"


def test_table_into_an_unwritable_folder_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    store = _store_with_rows(tmp_path / "results.jsonl", tmp_path / "encoder.pt")
    out = tmp_path / "leaderboard"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:
        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        monkeypatch.setattr(tempfile, "mkstemp", denied)
    try:
        assert main(["table", "--results", str(store.path), "--out", str(out), "--resamples", "10"]) == 2
        assert _one_line_error(capsys) == f"asit table: error: cannot write {out / 'leaderboard.md'}: Permission denied"
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


def test_table_file_name_taken_by_a_folder_is_one_line(capsys, tmp_path) -> None:
    store = _store_with_rows(tmp_path / "results.jsonl", tmp_path / "encoder.pt")
    out = tmp_path / "leaderboard"
    (out / "leaderboard.csv").mkdir(parents=True)
    assert main(["table", "--results", str(store.path), "--out", str(out), "--resamples", "10"]) == 2
    assert _one_line_error(capsys) == (f"asit table: error: cannot write {out / 'leaderboard.csv'}: it is a folder; "
                                       "give a file name")
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


# ----------------------------------------------------------------------------------------------- asit bench

def test_a_binary_suite_file_is_one_line_naming_it(capsys, tmp_path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(bytes(range(128, 256)) * 8)
    assert main(["bench", str(suite)]) == 2
    assert _one_line_error(capsys) == (f"asit bench: error: suite file {suite} is not a YAML text file (byte 0 is "
                                       "not UTF-8: a binary file?)")


@pytest.mark.parametrize("content, reason", [
    (b"name: x\n\x00\x01\x02", "unacceptable character #x0000"),     # UTF-8, but not YAML
    (b"name: [unclosed\nseeds: 1\n", "while parsing a flow sequence"),
    (b"- just\n- a list\n", "must hold a mapping at top level, not list"),
])
def test_a_suite_file_that_is_not_yaml_is_one_line_naming_it(capsys, tmp_path, content, reason) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(content)
    assert main(["bench", str(suite)]) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"asit bench: error: suite file {suite} ") and reason in err


def _claimed_by_another_run(store_path: Path, keys: dict[int, str]):
    """A runner whose first cell is finished by 'another `asit bench`' (a row appended to the same store) while it
    runs, i.e. after this run checked the store and before it appends its own row."""
    calls: list[TaskCell] = []

    def runner(cell: TaskCell, work_dir: Path) -> TaskResult:
        calls.append(cell)
        if len(calls) == 1:
            other = make_row(cell, keys[cell.seed], "b" * 64, result=TaskResult("accuracy", 0.25), suite="other")
            assert ResultsStore(store_path).append(other)
        return TaskResult("accuracy", 0.5)

    return runner


def test_concurrent_bench_counts_rows_the_store_refused_separately(tmp_path) -> None:
    checkpoint = tmp_path / "encoder.pt"
    checkpoint.write_bytes(b"weights")
    (tmp_path / "sid").mkdir()
    suite = parse_suite({"name": "race", "encoders": {"pre": {"path": str(checkpoint)}},
                         "data": {"voxceleb1": str(tmp_path / "sid")}, "tasks": {"voxceleb1": {}},
                         "modes": ["probe"], "seeds": [1, 2, 3, 4], "results": str(tmp_path / "results.jsonl"),
                         "work_dir": str(tmp_path / "work")})
    keys = {planned.cell.seed: planned.key for planned in plan_suite(suite)}
    messages: list[str] = []
    report = run_suite(suite, runner=_claimed_by_another_run(suite.results, keys), progress=False,
                       log=messages.append)
    assert len(report.succeeded) == 3 and len(report.already_in_store) == 1 and not report.failed
    assert report.already_in_store[0] not in report.succeeded
    assert (f"suite race: 4 cells — 0 skipped (already done), 3 ran, 1 already in the store (another run finished "
            f"it first), 0 failed; results in {suite.results}") in messages[-1]
    assert format_report(report).splitlines()[0] == messages[-1].splitlines()[0]
    kept = [r for r in ResultsStore(suite.results).rows() if r["key"] == report.already_in_store[0]]
    assert [r["suite"] for r in kept] == ["other"]    # the other run's row, not a second one


# -------------------------------------------------------------------------------------------- pipes, imports

def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from upstream.cli import main; sys.exit(main())", *args]


@pytest.mark.parametrize("command", ["info", "table"])
def test_a_reader_that_goes_away_is_no_traceback(tmp_path, tiny_encoder_file, command) -> None:
    """`asit info X | head -1`, `asit table ... | head -1`: the reader closes its end before the command writes; the
    command exits quietly with status 1 (the Python documentation's note on SIGPIPE). `--help` was quiet already:
    argparse ignores write errors itself."""
    args = {"info": ["info", str(tiny_encoder_file)],
            "table": ["table", "--results", str(_store_with_rows(tmp_path / "r.jsonl", tmp_path / "e.pt").path),
                      "--out", str(tmp_path / "board"), "--resamples", "10"]}[command]
    proc = subprocess.Popen(_cli(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    proc.stdout.close()                               # before the interpreter has even started
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 1, err           # not 120: the interpreter's status when its flush at exit fails
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    if command == "table":
        assert (tmp_path / "board" / "leaderboard.md").is_file()     # the files were written before the output


def test_commands_outside_heareval_do_not_import_tensorflow(tmp_path, tiny_encoder_file, tone_folder) -> None:
    """info, export, table, pretrain --help and a (one-epoch) pretraining run, in one fresh interpreter; the check
    after each says which one imported TensorFlow (pretraining's TensorBoard logger did)."""
    store = _store_with_rows(tmp_path / "results.jsonl", tmp_path / "encoder.pt")
    script = f"""
import contextlib, io, sys
sys.path.insert(0, {str(TESTS)!r})
from conftest import TINY_PRETRAIN_OVERRIDES
from upstream.cli import main
steps = {{
    "info": ["info", {str(tiny_encoder_file)!r}],
    "export": ["export", {str(tiny_encoder_file)!r}, {str(tmp_path / "exported.pt")!r}],
    "table": ["table", "--results", {str(store.path)!r}, "--out", {str(tmp_path / "board")!r}, "--resamples", "10"],
    "pretrain --help": ["pretrain", "--help"],
    "pretrain": ["pretrain", "demo_tiny", *TINY_PRETRAIN_OVERRIDES, "data.source={tone_folder}",
                 "run_dir={tmp_path / "run"}", "trainer.max_epochs=1"],
}}
for name, argv in steps.items():
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
    print(f"STEP {{name}}: {{status}} {{'tensorflow' in sys.modules}}", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("STEP ")]
    assert lines == [f"STEP {name}: 0 False" for name in ("info", "export", "table", "pretrain --help", "pretrain")], \
        done.stdout[-2000:] + done.stderr[-2000:]
    assert any((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))   # TensorBoard still logs
