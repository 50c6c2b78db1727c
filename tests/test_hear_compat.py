"""asit_hear.compat: the one shim heareval needs (allow-listing its grid callables for weights_only loads), and that
it is activated only inside heareval's predictions runner, through pytorch-lightning 1.x's entry-point hook."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

from asit_hear import compat

PROBE = textwrap.dedent("""
    import json, os, pickle, sys, tempfile, warnings
    warnings.simplefilter("ignore")
    import torch
    from torch.serialization import get_safe_globals

    def allowed():
        return sorted(f"{g.__module__}.{g.__qualname__}" for g in get_safe_globals() if callable(g))

    def refused(path):
        try:
            torch.load(path)                      # torch's default: weights_only=True
            return False
        except pickle.UnpicklingError:
            return True

    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    report = {"start": allowed()}
    import pytorch_lightning as pl
    pl.Trainer(**quiet)                           # a Lightning 1.x trainer outside heareval
    report["pl_without_heareval"] = allowed()
    import heareval.predictions.task_predictions as tp
    import lightning.pytorch as L
    L.Trainer(**quiet)                            # our Lightning 2.x (pretraining) beside heareval
    report["lightning2_with_heareval"] = allowed()
    folder = tempfile.mkdtemp()
    like_heareval = os.path.join(folder, "grid.ckpt")
    torch.save({"epoch": 3, "hyper_parameters": {k: v[-1] for k, v in tp.PARAM_GRID.items()}}, like_heareval)
    hostile = os.path.join(folder, "hostile.ckpt")
    torch.save({"epoch": 3, "run": os.system}, hostile)
    report["refused_before"] = refused(like_heareval)
    pl.Trainer(**quiet)                           # what heareval's task_predictions_train does
    report["pl_with_heareval"] = allowed()
    report["refused_after"] = refused(like_heareval)
    report["hostile_refused_after"] = refused(hostile)
    report["epoch"] = torch.load(like_heareval)["epoch"]
    from asit_hear import compat
    report["grid"] = sorted(f"{c.__module__}.{c.__qualname__}" for c in compat.heareval_grid_callables())
    print("REPORT" + json.dumps(report))
""")


def test_the_shim_is_registered_as_a_pytorch_lightning_1x_entry_point() -> None:
    points = importlib.metadata.entry_points(group=compat.ENTRY_POINT_GROUP)
    values = {p.value for p in points}
    assert "asit_hear.compat:heareval_lightning_callbacks" in values, (
        "pyproject.toml must declare [project.entry-points.\"pytorch_lightning.callbacks_factory\"] "
        "asit_hear = \"asit_hear.compat:heareval_lightning_callbacks\" (then reinstall: scripts/setup.sh)")
    assert compat.ENTRY_POINT_GROUP == "pytorch_lightning.callbacks_factory"


def test_shim_activates_only_in_heareval_processes_and_keeps_weights_only_on() -> None:
    """In a fresh process (pytorch-lightning 1.x stays out of the test session)."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.split("REPORT", 1)[1])
    grid = set(report["grid"])           # the classes and functions of heareval's hyper-parameter grids
    assert report["grid"] == ["torch.nn.init.xavier_normal_", "torch.nn.init.xavier_uniform_",
                              "torch.nn.modules.batchnorm.BatchNorm1d", "torch.nn.modules.linear.Identity",
                              "torch.optim.adam.Adam"]
    assert not grid & set(report["start"])
    assert not grid & set(report["pl_without_heareval"])             # no heareval: no allow-listing
    assert not grid & set(report["lightning2_with_heareval"])        # lightning 2.x never calls the factory
    assert report["refused_before"] is True                          # the problem torch >= 2.6 creates
    assert grid <= set(report["pl_with_heareval"])                   # the fix, inside heareval's trainer
    assert report["refused_after"] is False and report["epoch"] == 3
    assert report["hostile_refused_after"] is True                   # weights_only stays on for anything else
