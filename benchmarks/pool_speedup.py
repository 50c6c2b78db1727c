"""The local pool's speed-up over serial on this machine: one suite run twice from scratch (own store, work folder
and embedding cache each), serially and with `parallel.workers=N`, wall time of each; JSON.

    python -m benchmarks.pool_speedup SUITE [--set KEY=VALUE ...] [--workers 2] [--out FILE]

Both runs must produce the same cells with the same values (checked and recorded: the pool changes where cells run,
not what they compute; torch's thread count differs, so values are compared to 1e-6 and differences are listed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from upstream.errors import AsitError

from .perf import bench_device, environment, write_report
from .results import ResultsStore
from .suite import load_suite, run_suite


def timed_run(suite_name: str, sets: list[str], root: Path, parallel: list[str]) -> tuple[float, dict[str, float]]:
    """Wall seconds of the whole suite from an empty store, work folder and embedding cache under `root`, and the
    value of every cell by key."""
    if root.exists():
        shutil.rmtree(root)
    overrides = [*sets, f"overrides.probe.cache_dir={root / 'cache'}", *parallel]
    suite = load_suite(suite_name, overrides, results=root / "results.jsonl", work_dir=root / "work")
    start = time.monotonic()
    report = run_suite(suite, progress=False)
    seconds = time.monotonic() - start
    if not report.complete:
        raise AsitError(f"pool speed-up: {len(report.failed)} cell(s) failed in {root}: {report.failed[0]}")
    values = {row["key"]: float(row["value"]) for row in ResultsStore(suite.results).rows()}
    if len(values) != report.planned:
        raise AsitError(f"pool speed-up: {root} holds {len(values)} rows for {report.planned} cells")
    return seconds, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pool_speedup", description=__doc__.split("\n")[0])
    parser.add_argument("suite")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", default="runs/pool_speedup", help="scratch folder for the two runs")
    parser.add_argument("--out", default="benchmarks/results/pool-speedup-cpu.json")
    args = parser.parse_args(argv)
    root = Path(args.root)
    env = environment(bench_device("cpu"))
    serial_s, serial = timed_run(args.suite, args.sets, root / "serial", ["parallel.backend=serial"])
    pool_s, pooled = timed_run(args.suite, args.sets, root / f"workers{args.workers}",
                               [f"parallel.workers={args.workers}", "parallel.backend=local"])
    differ = {key: [serial[key], pooled.get(key)] for key in serial
              if pooled.get(key) is None or abs(serial[key] - pooled[key]) > 1e-6}
    result = {"suite": args.suite, "sets": args.sets, "cells": len(serial), "cores": os.cpu_count(),
              "workers": args.workers, "serial_s": serial_s, "pool_s": pool_s, "speedup": serial_s / pool_s,
              "values_equal": not differ, "values_differ": differ}
    write_report(Path(args.out), env, [result])
    print(f"pool speed-up: {len(serial)} cells, serial {serial_s:.0f} s, {args.workers} workers {pool_s:.0f} s "
          f"-> {serial_s / pool_s:.2f}x; values {'equal' if not differ else f'differ in {len(differ)} cells'}; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
