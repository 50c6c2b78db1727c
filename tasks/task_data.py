"""A task's examples in their roles (train / valid / test) under its protocol, read from the dataset's own layout.

Protocols (the paper's): AS-20K balanced_train → eval; ESC-50 train on 4 folds, test on the held-out fold; Speech
Commands V2 and V1 (SUPERB 12-class) from the official lists / test set; VoxCeleb1 from iden_split.txt. Examples are
also grouped in *parts* (ESC-50: its folds; others: their splits), the unit the probe's embedding cache stores, so
the five ESC-50 cells share five cached folds.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from upstream.errors import AsitError

from .api import TASKS
from .datasets import DatasetIndex, Example, read_audioset, read_esc50, read_speechcommands, read_voxceleb1
from .metrics import primary_metric

# task -> protocol, the same names the benchmarks' suites use
PROTOCOLS: dict[str, str] = {
    "as20k": "as20k/balanced-train-eval",
    "esc50": "esc50/train4-test1",
    "speechcommands_v2": "speechcommands/v2-35class",
    "speechcommands_v1": "superb/ks-v1-12class",
    "voxceleb1": "voxceleb1/iden-split",
}

# classes of the real dataset under each protocol: a folder with another label set is a custom protocol
OFFICIAL_CLASSES: dict[str, int] = {"as20k": 527, "esc50": 50, "speechcommands_v2": 35, "speechcommands_v1": 12,
                                    "voxceleb1": 1251}


def protocol_of_data(task: str, num_classes: int) -> str:
    """The task's protocol, or a custom one when the data's label set is not the real dataset's (a 15-word Speech
    Commands folder is `speechcommands/v2-custom-15class`, never the official 35-class column)."""
    base, official = PROTOCOLS[task], OFFICIAL_CLASSES[task]
    if num_classes == official:
        return base
    tag = f"custom-{num_classes}class"
    return base.replace(f"{official}class", tag) if f"{official}class" in base else f"{base}-{tag}"


READERS: dict[str, Callable[..., DatasetIndex]] = {
    "as20k": read_audioset,
    "esc50": read_esc50,
    "speechcommands_v2": lambda root: read_speechcommands(root, "v2"),
    "speechcommands_v1": lambda root, test_root=None: read_speechcommands(root, "v1", test_root=test_root),
    "voxceleb1": read_voxceleb1,
}


@dataclass
class TaskData:
    task: str
    index: DatasetIndex
    parts: dict[str, list[Example]]                       # cacheable partition of the examples used
    roles: dict[str, list[str]] = field(default_factory=dict)   # train/valid/test -> part names

    def examples(self, role: str) -> list[Example]:
        return [e for part in self.roles.get(role, []) for e in self.parts[part]]

    @property
    def train(self) -> list[Example]:
        return self.examples("train")

    @property
    def valid(self) -> list[Example]:
        return self.examples("valid")

    @property
    def test(self) -> list[Example]:
        return self.examples("test")

    @property
    def multilabel(self) -> bool:
        return self.index.multilabel

    @property
    def num_classes(self) -> int:
        return len(self.index.labels)

    @property
    def protocol(self) -> str:
        """The protocol these examples were evaluated under (custom when the label set is not the official one)."""
        return protocol_of_data(self.task, self.num_classes)

    @property
    def metric(self) -> str:
        return primary_metric(self.multilabel)

    def targets(self, examples: list[Example]) -> np.ndarray:
        """Multi-hot [N, C] float32 for multi-label tasks, class ids [N] int64 otherwise."""
        lookup = self.index.label_index()
        if self.multilabel:
            out = np.zeros((len(examples), self.num_classes), np.float32)
            for row, example in enumerate(examples):
                out[row, [lookup[label] for label in example.labels]] = 1.0
            return out
        return np.array([lookup[e.labels[0]] for e in examples], dtype=np.int64)

    def save_predictions(self, path: Path, scores: np.ndarray, targets: np.ndarray,
                         examples: list[Example]) -> None:
        """predictions.npz: test scores and targets, row by row with each clip's path, and the label names, so a
        run can be re-scored without rerunning it."""
        np.savez(path, scores=scores, targets=targets, paths=np.array([str(e.path) for e in examples]),
                 labels=np.array(self.index.labels))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"n_{role}": len(self.examples(role)) for role in ("train", "valid", "test")}
        out["num_classes"] = self.num_classes
        if self.index.report:
            out["dataset_report"] = self.index.report
        return out


def read_index(task: str, data_root: str | Path, options: dict[str, Any] | None = None) -> DatasetIndex:
    """The task's dataset reader with recipe options (`dataset:`); None values keep the reader's defaults."""
    if task not in READERS:
        raise AsitError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if not str(data_root):
        raise AsitError(f"no data root given for {task}")
    reader = READERS[task]
    options = {k: v for k, v in (options or {}).items() if v is not None}
    accepted = [p for p in inspect.signature(reader).parameters if p != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise AsitError(f"recipe dataset option(s) {', '.join(unknown)} are not understood by the {task} reader "
                        f"(it takes {', '.join(accepted) or 'none'})")
    return reader(Path(data_root), **options)


def load_task_data(task: str, data_root: str | Path, *, fold: int | None = None, protocol: str = "",
                   options: dict[str, Any] | None = None) -> TaskData:
    """Read the dataset and assign roles under the task's protocol (`fold`: ESC-50's held-out test fold)."""
    if task not in PROTOCOLS:
        raise AsitError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    index = read_index(task, data_root, options)
    if protocol and protocol not in (PROTOCOLS[task], protocol_of_data(task, len(index.labels))):
        raise AsitError(f"task {task} is evaluated under protocol {PROTOCOLS[task]!r}, not {protocol!r}")
    if task == "esc50":
        if fold is None:
            raise AsitError(f"esc50 is 5-fold cross-validated: give the held-out fold (1..{len(index.folds)})")
        if fold not in index.folds:
            raise AsitError(f"esc50 fold {fold} does not exist (folds: {index.folds})")
        parts = {f"fold{f}": index.fold(f) for f in index.folds}
        roles = {"train": [f"fold{f}" for f in index.folds if f != fold], "test": [f"fold{fold}"]}
        return TaskData(task, index, parts, roles)
    if fold is not None:
        raise AsitError(f"{task} has official splits; --fold applies to esc50 only")
    parts = {split: index.split(split) for split in ("train", "valid", "test")}
    parts = {name: examples for name, examples in parts.items() if examples}
    for required in ("train", "test"):
        if required not in parts:
            raise AsitError(f"{task} at {data_root}: the {required} split is empty")
    return TaskData(task, index, parts, {role: [role] for role in parts})
