"""The contract between task runners (tasks/) and suites/leaderboards (benchmarks/): one cell in, one result out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODES = ("finetune", "probe")
TASKS = ("as20k", "esc50", "speechcommands_v2", "speechcommands_v1", "voxceleb1")


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder to evaluate. `init="scratch"` keeps the file's architecture and frontend but re-initialises the
    weights (the paper's "Scratch" rows)."""

    name: str                         # row label in tables, e.g. "asit-tiny-demo"
    path: str                         # export / Lightning checkpoint / official ASiT checkpoint
    init: str = "pretrained"          # "pretrained" | "scratch"


@dataclass(frozen=True)
class TaskCell:
    """One unit of work of a suite: an encoder on a task, in a mode, under a protocol, for a seed and fold."""

    encoder: EncoderSpec
    task: str                         # one of TASKS
    mode: str                         # one of MODES
    protocol: str                     # e.g. "esc50/train4-test1", "superb/ks-v1-12class", "voxceleb1/iden-split"
    seed: int = 0
    fold: int | None = None           # the held-out test fold for cross-validated tasks
    data_root: str = ""               # the dataset's root folder in its real layout
    recipe: str = ""                  # recipe name or YAML path; "" = the task's default recipe for the mode
    overrides: dict[str, Any] = field(default_factory=dict)   # recipe overrides (e.g. epochs for CPU suites)


@dataclass
class TaskResult:
    metric: str                       # "accuracy" | "mAP"
    value: float
    extra: dict[str, Any] = field(default_factory=dict)   # n_train, n_test, epochs, encoder forwards, …
