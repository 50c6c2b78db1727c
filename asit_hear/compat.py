"""The one runtime shim asit-hear needs to run heareval 2021.1.3 on today's stack, and why.

What was checked (torch 2.9.1, tensorflow-cpu 2.21.0, pytorch-lightning 1.8.6, numpy 2):

- `python -m heareval.embeddings.runner asit_hear ...` and `hear-validator asit_hear ...`: run unmodified once
  tensorflow-cpu is installed (both import TensorFlow at top level). No shim.
- `python -m heareval.predictions.runner ...`: runs unmodified on pytorch-lightning 1.8.6 (a real dependency:
  it uses Lightning 1.x APIs and needs 1.8's restore of the checkpoint epoch at test time) except for one thing.
  heareval saves Lightning checkpoints whose hyper-parameters hold the grid's *classes and functions*
  (torch.nn.Identity, torch.nn.BatchNorm1d, torch.nn.init.xavier_*_, torch.optim.Adam) and reloads them with a
  bare `torch.load(path)` (its own `task_predictions_train`, and Lightning 1.8's `trainer.test(ckpt_path=...)`).
  Since torch 2.6 that defaults to `weights_only=True`, which refuses those globals.

The shim: allow-list exactly the callables of heareval's own hyper-parameter grids for weights_only loading, so
those loads succeed while every `torch.load` keeps `weights_only=True` (unlike TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1,
which turns the protection off for the whole process). The predictions runner never imports asit_hear, so the
shim is activated through pytorch-lightning 1.x's own plugin hook: the `pytorch_lightning.callbacks_factory`
entry point (declared in pyproject.toml) is called whenever a `pytorch_lightning.Trainer` is built. The factory
does nothing unless heareval's predictions module is loaded in that process, and `lightning` 2.x (our
pretraining) reads a different group (`lightning.pytorch.callbacks_factory`), so no other code path is touched.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

PREDICTIONS_MODULE = "heareval.predictions.task_predictions"
GRID_NAMES = ("PARAM_GRID", "FAST_PARAM_GRID", "FASTER_PARAM_GRID")
ENTRY_POINT_GROUP = "pytorch_lightning.callbacks_factory"


def heareval_grid_callables() -> list[Callable[..., Any]]:
    """The classes and functions heareval's hyper-parameter grids put into its checkpoints."""
    module = sys.modules.get(PREDICTIONS_MODULE)
    if module is None:
        import importlib

        module = importlib.import_module(PREDICTIONS_MODULE)
    found: dict[str, Callable[..., Any]] = {}
    for name in GRID_NAMES:
        for values in getattr(module, name, {}).values():
            for value in values:
                if callable(value):
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[k] for k in sorted(found)]


def allow_heareval_checkpoints() -> list[str]:
    """Allow-list heareval's grid callables for `torch.load(weights_only=True)`; returns their names."""
    import torch

    callables = heareval_grid_callables()
    torch.serialization.add_safe_globals(callables)
    return [f"{c.__module__}.{c.__qualname__}" for c in callables]


def heareval_lightning_callbacks() -> list[Any]:
    """`pytorch_lightning.callbacks_factory` entry point: activates the shim inside heareval's predictions
    runner (and nowhere else); adds no callback."""
    if PREDICTIONS_MODULE in sys.modules:
        allow_heareval_checkpoints()
    return []
