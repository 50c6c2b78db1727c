"""python -m benchmarks.cell_worker: a local worker of a parallel suite (benchmarks/parallel.py). It reads cell files
(pickles written by the coordinator) from stdin, one path per line, runs each cell in this process, leaves its row
in the cell's folder and answers `done` on stdout; end of input ends it. The coordinator stays the only writer of
the results store."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from .parallel import DONE, cell_job


def main() -> int:
    for line in sys.stdin:
        planned, runner, work_root, suite = pickle.loads(Path(line.strip()).read_bytes())
        cell_job(planned, runner, work_root, suite)
        sys.stdout.buffer.write(DONE)
        sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
