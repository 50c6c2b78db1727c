"""`asit hear-tasks OUT [--esc50 DIR] [--speechcommands-v2 DIR] [--speechcommands-v1 DIR] [--voxceleb1 DIR]
[--audioset DIR] [--corpus DIR] [--force]`: local copies of the benchmarks -> heareval task folders in OUT.

Nothing is downloaded: each dataset is read from the folder given, in its own layout (tasks.datasets readers).
Then: `python -m heareval.embeddings.runner asit_hear --model ENCODER --tasks-dir OUT` (see docs/hear.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from upstream.errors import AsitError

from .datasets import DatasetIndex
from .hear_export import TASK_OF_DATASET, TASK_SPECS, write_hear_task
from .task_data import read_index


def read_dataset(key: str, root: Path, speechcommands_v1_test: Path | None = None) -> DatasetIndex:
    """The reader of dataset `key` (a TASK_SPECS key) on its folder: the task runners' own (tasks.task_data)."""
    if key not in TASK_SPECS:
        raise AsitError(f"no HEAR task for dataset {key!r}; known: {', '.join(TASK_SPECS)}")
    options = {"test_root": speechcommands_v1_test} if key == "speechcommands_v1" else None
    return read_index(TASK_OF_DATASET.get(key, key), root, options)


# dataset key -> command-line flag (argparse dest)
ARGUMENTS = {"esc50": "esc50", "speechcommands_v2": "speechcommands_v2", "speechcommands_v1": "speechcommands_v1",
             "voxceleb1": "voxceleb1", "audioset": "audioset"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="folder to write the task folders into (heareval's --tasks-dir)")
    parser.add_argument("--esc50", type=Path, metavar="DIR", help="ESC-50-master (audio/ + meta/esc50.csv)")
    parser.add_argument("--speechcommands-v2", type=Path, metavar="DIR", help="speech_commands_v0.02")
    parser.add_argument("--speechcommands-v1", type=Path, metavar="DIR",
                        help="speech_commands_v0.01 (SUPERB 12-class protocol)")
    parser.add_argument("--speechcommands-v1-test", type=Path, metavar="DIR", default=None,
                        help="SUPERB's v0.01 test set (default: speech_commands_test_set_v0.01 beside the v1 folder)")
    parser.add_argument("--voxceleb1", type=Path, metavar="DIR", help="VoxCeleb1 (wav/ + iden_split.txt)")
    parser.add_argument("--audioset", type=Path, metavar="DIR",
                        help="AudioSet: balanced_train/eval segment CSVs, class_labels_indices.csv and the clips you "
                        "have (AS-20K; listed clips you lack are dropped and counted)")
    parser.add_argument("--corpus", type=Path, metavar="DIR",
                        help="a corpus made by `asit corpus`: every dataset it holds (explicit flags win)")
    parser.add_argument("--force", action="store_true", help="rebuild task folders that already exist")


def dataset_roots(args: argparse.Namespace) -> tuple[dict[str, Path], Path | None]:
    """(dataset key -> folder, the Speech Commands v0.01 test-set folder), from the flags and/or --corpus."""
    roots: dict[str, Path] = {}
    v1_test = args.speechcommands_v1_test
    if args.corpus is not None:
        from .corpus import read_manifest

        manifest = read_manifest(args.corpus)
        if manifest is None or not isinstance(manifest.get("datasets"), dict):
            raise AsitError(f"--corpus {args.corpus}: no corpus.json there (make one with `asit corpus`)")
        for key, rel in manifest["datasets"].items():
            if key in TASK_SPECS:
                roots[key] = Path(args.corpus) / rel
        if v1_test is None and "speechcommands_v1_test" in manifest["datasets"]:
            v1_test = Path(args.corpus) / manifest["datasets"]["speechcommands_v1_test"]
    for key, name in ARGUMENTS.items():
        if getattr(args, name) is not None:
            roots[key] = getattr(args, name)
    if not roots:
        raise AsitError("no dataset given: pass --esc50, --speechcommands-v2, --speechcommands-v1, --voxceleb1, "
                        "--audioset and/or --corpus")
    return roots, v1_test


def build_tasks(roots: dict[str, Path], out: Path, *, speechcommands_v1_test: Path | None = None,
                force: bool = False, log: Callable[[str], None] = print) -> dict[str, Path]:
    """dataset key -> its heareval task folder in `out` (written, or found up to date)."""
    written = {}
    for key, root in roots.items():
        index = read_dataset(key, Path(root), speechcommands_v1_test)
        written[key] = write_hear_task(index, TASK_SPECS[key], out, force=force, log=log)
    return written


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    roots, v1_test = dataset_roots(args)
    written = build_tasks(roots, out, speechcommands_v1_test=v1_test, force=args.force,
                          log=lambda msg: print(f"asit hear-tasks: {msg}", flush=True))
    print(f"asit hear-tasks: {len(written)} task(s) in {out}: {', '.join(p.name for p in written.values())}")
    print(f"next: python -m heareval.embeddings.runner asit_hear --model ENCODER.pt --tasks-dir {out}")
    return 0
