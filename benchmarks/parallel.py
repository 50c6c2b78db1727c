"""Running a suite's cells in parallel: local worker processes (N CPU workers, or one per GPU) or SLURM job arrays
through submitit, with the coordinator (`asit bench`) the only writer of the results store.

Cells run in worker processes, never in the coordinator (except with the `debug` backend, submitit's in-process
executor for tests): local workers (`benchmarks.cell_worker`, one cell at a
time each, kept for the next cell so the task stack is imported once per worker) or one submitit job per cell. A
cell's process writes its row atomically into the cell's work folder (`row.json`); the coordinator appends the row
to the store and removes the file. So:

- kill -9 of a worker: its cell gets a failed row naming the signal (rerunning the suite retries it, as any failed
  cell), a new worker takes its slot; the other workers' cells are unaffected;
- kill -9 of the coordinator: local workers die with it (PR_SET_PDEATHSIG), finished rows already in the store stay,
  and a worker that finished while the coordinator was dying left its successful `row.json`, which the next run
  appends instead of rerunning the cell;
- no process but the coordinator writes the store, and every write is one atomic append (benchmarks/results.py).

The pool is configured as data, in the suite's `parallel:` section (`--set parallel.workers=2`), see
docs/benchmarks.md, "Parallel suites".
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from upstream.atomic import atomic_write, atomic_write_text
from upstream.errors import AsitError, cause

from .parallel_config import ParallelConfig
from .results import STATUS_OK
from .suite import PlannedCell, resolve_runner, run_cell

DONE = b"done\n"                 # a local worker's answer after each cell
ROW_FILE = "row.json"           # a finished cell's row, in its work folder, until the coordinator has stored it
CELL_FILE = "cell.pkl"          # what the local worker runs
POLL_S = 0.2


def runner_spec(runner: Callable[..., Any] | str) -> str:
    """`module:function` of a runner, so a worker process can import it; refused for what no process can import."""
    if isinstance(runner, str):
        return runner
    module, name = getattr(runner, "__module__", ""), getattr(runner, "__qualname__", "")
    if not module or module == "__main__" or not name or "<" in name:
        raise AsitError(f"runner {runner!r} cannot run in a worker process: give it as module:function of an "
                        "importable module")
    return f"{module}:{name}"


# ------------------------------------------------------------------------------------------------- a cell's process

def cell_job(planned: PlannedCell, runner: str, work_root: str, suite: str) -> dict[str, Any]:
    """Run one cell in this process and leave its row in the cell's folder (atomically); also returned, for
    submitit. Exceptions become failed rows (run_cell), so only a killed process leaves no row."""
    row = run_cell(planned, resolve_runner(runner), Path(work_root), suite=suite)
    atomic_write_text(planned.work_dir(Path(work_root)) / ROW_FILE, json.dumps(row, allow_nan=False))
    return row


def read_row(planned: PlannedCell, work_root: Path) -> dict[str, Any] | None:
    """The row a cell's process left, if it is this cell's and complete (a torn or foreign file is ignored)."""
    path = planned.work_dir(work_root) / ROW_FILE
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and row.get("key") == planned.key else None


def clear_row(planned: PlannedCell, work_root: Path) -> None:
    (planned.work_dir(work_root) / ROW_FILE).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------- the coordinator

Store = Callable[[PlannedCell, dict[str, Any]], None]   # the coordinator's one writer: append + report + status line


def harvest(cells: Sequence[PlannedCell], work_root: Path, store: Store) -> list[PlannedCell]:
    """Store the successful rows that processes of an earlier, killed coordinator finished but never stored; returns
    the cells still to run. A failed row left behind is not kept: its cell runs again, as failed cells do."""
    todo = []
    for planned in cells:
        row = read_row(planned, work_root)
        clear_row(planned, work_root)
        if row is not None and row.get("status") == STATUS_OK:
            store(planned, row)
        else:
            todo.append(planned)
    return todo


def run_local(cells: Sequence[PlannedCell], config: ParallelConfig, runner: str, work_root: Path, suite: str,
              store: Store) -> None:
    """`config.slots` worker processes, each running one cell at a time and kept for the next (the task stack is
    imported once per worker, not once per cell); the coordinator hands out cells, stores each row, and replaces a
    worker that died (its cell gets a failed row)."""
    queue = list(cells)
    workers: dict[int, _Worker] = {}
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.slots)
    try:
        while queue or any(w.cell is not None for w in workers.values()):
            for slot in range(config.slots):
                worker = workers.get(slot)
                if worker is None and queue:
                    worker = workers[slot] = _Worker(slot, work_root, _slot_env(config, slot, threads))
                if worker is not None and worker.cell is None and queue:
                    worker.give(queue.pop(0), runner, work_root, suite)
            busy = {w.stdout: w for w in workers.values() if w.cell is not None}
            readable, _, _ = select.select(list(busy), [], [], POLL_S)
            for worker in list(busy.values()):
                planned = worker.cell
                assert planned is not None
                if worker.stdout in readable and worker.finished():
                    row = read_row(planned, work_root)
                elif worker.proc.poll() is not None:      # died mid-cell: killed, out of memory, a crash in C
                    row = None
                    del workers[worker.slot]
                else:
                    continue
                worker.cell = None
                clear_row(planned, work_root)
                store(planned, row if row is not None else _died_row(planned, _exit_cause(worker.proc.returncode),
                                                                      worker.log, suite))
    finally:
        for worker in workers.values():       # done: EOF ends each worker; Ctrl-C or an error here: no orphans
            worker.close(kill=worker.cell is not None or bool(queue))


class _Worker:
    """One `python -m benchmarks.cell_worker` process: it reads cell files from stdin, one per line, and answers
    `done` on stdout after each (its row is then in the cell's folder)."""

    def __init__(self, slot: int, work_root: Path, env: dict[str, str]) -> None:
        self.slot = slot
        self.cell: PlannedCell | None = None
        self.log = work_root / "_workers" / f"slot{slot}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:       # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.cell_worker"], env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdout = self.proc.stdout

    def give(self, planned: PlannedCell, runner: str, work_root: Path, suite: str) -> None:
        folder = planned.work_dir(work_root)
        folder.mkdir(parents=True, exist_ok=True)
        clear_row(planned, work_root)
        with atomic_write(folder / CELL_FILE) as handle:
            handle.write(pickle.dumps((planned, runner, str(work_root), suite)))
        self.cell = planned
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{folder / CELL_FILE}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:                 # it died before taking the cell: reported as its death
            pass

    def finished(self) -> bool:
        """After select() said readable: `done` (the row is written) or end of file (it died)."""
        return self.stdout.readline() == DONE

    def close(self, kill: bool) -> None:
        if kill:
            self.proc.kill()
        else:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.wait()


def _slot_env(config: ParallelConfig, slot: int, threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))   # torch's thread count
    if config.devices:
        env["CUDA_VISIBLE_DEVICES"] = config.devices[slot]
    return env


def _die_with_parent() -> None:
    """In the worker, before exec: SIGKILL when the coordinator dies (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _exit_cause(returncode: int | None) -> str:
    return (f"WorkerDied: the cell's worker process killed by signal {signal.Signals(-returncode).name} before "
            "writing its row" if returncode is not None and returncode < 0
            else f"WorkerDied: the cell's worker process exited with status {returncode} before writing its row")


def _died_row(planned: PlannedCell, cause: str, log: Path | None, suite: str) -> dict[str, Any]:
    """The failed row of a cell whose process ended without leaving one (killed, out of memory, a crash in C, a
    failed SLURM job): `cause`, then the last lines of the worker's log if there is one."""
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log is not None and log.exists() else []
    return planned.row(suite=suite, error=cause + ("\n" + "\n".join(tail) if tail else ""))


def run_submitit(cells: Sequence[PlannedCell], config: ParallelConfig, runner: str, work_root: Path, suite: str,
                 store: Store) -> None:
    """One job array (one task per cell) through submitit: SLURM, or its in-process debug executor. Preempted or
    timed-out tasks are requeued by submitit (`CellJob.checkpoint`); the coordinator stores each row as its job ends."""
    try:
        import submitit
    except ImportError:
        raise AsitError("parallel.backend slurm/debug needs submitit (pip install submitit)") from None
    cluster = "debug" if config.backend == "debug" else "slurm"
    executor = submitit.AutoExecutor(folder=str(work_root / "submitit" / "%j"), cluster=cluster)
    if cluster == "slurm":
        executor.update_parameters(slurm_array_parallelism=config.workers, **config.slurm)
    jobs = executor.map_array(CellJob(), list(cells), [runner] * len(cells), [str(work_root)] * len(cells),
                              [suite] * len(cells))
    pending = dict(zip(jobs, cells))
    while pending:
        for job, planned in list(pending.items()):
            try:
                finished = job.done()
            except Exception:  # the debug executor runs the job inside done(); result() reports what went wrong
                finished = True
            if not finished:
                continue
            del pending[job]
            row = read_row(planned, work_root)
            if row is None:
                try:
                    row = job.result()
                except Exception as exc:  # the job failed outside run_cell (node failure, cancelled, OOM-killed)
                    row = _died_row(planned, cause(exc), None, suite)
            clear_row(planned, work_root)
            store(planned, row)
        if pending:
            time.sleep(POLL_S)


class CellJob:
    """The callable submitit runs per array task; on preemption or timeout submitit calls `checkpoint`, which
    resubmits the same cell into the same work folder, where a finetune cell resumes from its last epoch's
    `last.ckpt` and a probe cell from the embeddings already cached (its row is written only at its end)."""

    def __call__(self, planned: PlannedCell, runner: str, work_root: str, suite: str) -> dict[str, Any]:
        return cell_job(planned, runner, work_root, suite)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


__all__ = ["CellJob", "cell_job", "harvest", "read_row", "run_local", "run_submitit", "runner_spec"]
