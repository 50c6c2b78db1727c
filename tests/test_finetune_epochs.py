"""Selection recorded: finetuning keeps the test score at the best-valid epoch and at the last epoch (each with its
own predictions file), counts its encoder forwards; probe rows name the grid point they used."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks import finetune
from tasks.api import EncoderSpec, TaskCell
from tasks.corpus import CorpusPaths
from tasks.datasets import Example
from tasks.metrics import evaluate
from tasks.probe import select
from tasks.recipes import load_recipe
from tasks.run import PROTOCOLS, run_task
from tasks.task_data import load_task_data

e2e = pytest.mark.e2e

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# VoxCeleb1 in the corpus: 40 train, 16 valid, 16 test utterances of 2.2-3.8 s (< 400 frames: one eval chunk each)
CHEAP = {"epochs": 2, "batch_size": 8, "num_workers": 0, "accelerator": "cpu", "train_frames": 64,
         "eval_frames": 400, "warmup_epochs": 0, "log_every_n_steps": 1, "time_mask": 0, "freq_mask": 0}


def vox_cell(corpus: CorpusPaths, encoder: Path, mode: str = "finetune", **overrides: object) -> TaskCell:
    return TaskCell(EncoderSpec("tiny", str(encoder)), "voxceleb1", mode, PROTOCOLS["voxceleb1"], seed=0,
                    data_root=str(corpus.voxceleb1), overrides=overrides)


def rescored(entry: dict, multilabel: bool = False) -> dict[str, float]:
    with np.load(entry["predictions"]) as saved:
        return evaluate(saved["targets"], saved["scores"], multilabel)


def first_epoch_is_best(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation still runs on the valid split, but logs 1/epoch, so the best checkpoint is epoch 1's, not the
    last's, whatever the tiny model learns."""

    def validation_end(self: finetune.FinetuneModule) -> None:
        self._eval_end("valid")
        epoch = int(self.current_epoch) + 1
        self.valid_history.append((epoch, 1.0 / epoch))
        self.log("valid/metric", 1.0 / epoch, sync_dist=False)

    monkeypatch.setattr(finetune.FinetuneModule, "on_validation_epoch_end", validation_end)


@e2e
def test_selecting_on_valid_reports_the_best_epoch_and_keeps_the_last(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    first_epoch_is_best(monkeypatch)
    result = run_task(vox_cell(corpus, tiny_encoder_file, **CHEAP, keep_checkpoints=True), tmp_path)
    extra, scores = result.extra, result.extra["epoch_scores"]
    assert extra["reported_epoch"] == "best" and set(scores) == {"best", "last"}
    assert (scores["best"]["epoch"], scores["last"]["epoch"]) == (1, 2) == (extra["best_epoch"], extra["epochs"])
    assert (scores["best"]["valid"], scores["last"]["valid"]) == (1.0, 0.5)
    # the row's value and predictions.npz are the best epoch's; the last epoch's go to predictions_last.npz
    assert result.value == scores["best"]["value"] and extra["metrics"] == scores["best"]["metrics"]
    assert scores["best"]["predictions"] == extra["predictions"] == str((tmp_path / "predictions.npz").resolve())
    assert scores["last"]["predictions"] == str((tmp_path / "predictions_last.npz").resolve())
    for entry in scores.values():                       # each number is the metric of its own predictions file
        assert rescored(entry) == pytest.approx(entry["metrics"])
        assert rescored(entry)["accuracy"] == pytest.approx(entry["value"])
    best, last = (np.load(scores[name]["predictions"]) for name in ("best", "last"))
    np.testing.assert_array_equal(best["paths"], last["paths"])
    np.testing.assert_array_equal(best["targets"], last["targets"])
    assert not np.allclose(best["scores"], last["scores"]), "epoch 1's weights are not epoch 2's"
    # the reported number comes from the best checkpoint, which holds epoch 1 (Lightning counts epochs from 0)
    assert torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)["epoch"] == 0
    # forwards actually run: 2 epochs x (5 training batches of 8 crops + 16 valid clips) + 16 test clips twice
    data = load_task_data("voxceleb1", str(corpus.voxceleb1))
    n_train, n_valid, n_test = len(data.train), len(data.valid), len(data.test)
    steps = n_train // 8
    assert extra["encoder_forwards"] == 2 * (steps * 8 + n_valid) + 2 * n_test
    assert extra["encoder_forward_calls"] == 2 * (steps + math.ceil(n_valid / 8)) + 2 * math.ceil(n_test / 8)
    assert extra["device"] == "cpu" and extra["precision"] == "32-true"
    cost = extra["compute"]                             # run_task's record takes the runner's counts and devices
    assert (cost["encoder_forwards"], cost["encoder_forward_calls"]) == (extra["encoder_forwards"],
                                                                         extra["encoder_forward_calls"])
    assert (cost["device_type"], cost["precision"]) == ("cpu", "32-true") and cost["peak_memory_mb"] > 0


@e2e
def test_selecting_the_last_epoch_keeps_only_the_last(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                      tmp_path: Path) -> None:
    result = run_task(vox_cell(corpus, tiny_encoder_file, **{**CHEAP, "select": "last", "epochs": 1}), tmp_path)
    extra = result.extra
    assert extra["reported_epoch"] == "last" and set(extra["epoch_scores"]) == {"last"}
    last = extra["epoch_scores"]["last"]
    assert last["epoch"] == 1 and "valid" not in last and result.value == last["value"]
    assert last["predictions"] == extra["predictions"] == str((tmp_path / "predictions.npz").resolve())
    assert rescored(last)["accuracy"] == pytest.approx(result.value)
    assert not (tmp_path / "predictions_last.npz").exists()
    # no validation: training batches and one test pass
    assert extra["encoder_forwards"] == (40 // 8) * 8 + 16 and extra["encoder_forward_calls"] == 5 + 2


def argmax_point(selection: dict[str, dict[str, float]]) -> tuple[int, float]:
    """The best (layer, point) of a recorded grid, ties to the earlier layer and the smaller point."""
    return max(((int(layer), float(point)) for layer, points in selection.items() for point in points),
               key=lambda lp: (selection[str(lp[0])][f"{lp[1]:g}"], -lp[0], -lp[1]))


@e2e
def test_probe_rows_name_the_grid_point_they_used(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                  tmp_path: Path) -> None:
    common = {"num_workers": 0, "n_jobs": 1, "max_iter": 200, "cache_dir": str(tmp_path / "cache")}
    grid = run_task(vox_cell(corpus, tiny_encoder_file, "probe", **common, C=[0.01, 1.0], layer="best"),
                    tmp_path / "grid").extra
    layer, C = argmax_point(grid["selection"])
    assert set(grid["selection"]) == {"0", "1", "2"} and all(set(p) == {"0.01", "1"}
                                                              for p in grid["selection"].values())
    assert grid["selected"] == {"layer": layer, "C": C, "score": grid["selection"][str(layer)][f"{C:g}"]}
    assert (grid["layer"], grid["C"]) == (layer, C), "the row's layer and C are the selected point"
    assert grid["device"] == "cpu" and grid["precision"] == "fp32"
    assert grid["compute"]["precision"] == "fp32" and grid["compute"]["encoder_forwards"] == grid["encoder_forwards"]
    single = run_task(vox_cell(corpus, tiny_encoder_file, "probe", **common, C=[1.0]), tmp_path / "single").extra
    assert single["selected"] == {"layer": 2, "C": 1.0, "score": None}
    assert single["selection"] == {"2": {"1": None}} and single["selection_on"] == "none (one layer, one C)"


def test_mlp_probes_record_the_chosen_number_of_epochs() -> None:
    recipe = load_recipe("esc50", "probe", overrides={"classifier": "mlp", "mlp_epochs": 6, "n_jobs": 1})
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = np.eye(3)[y] * 3 + rng.normal(0, 1, (60, 3))
    train = [Example(Path(f"{i}.wav"), ("a",), group=f"g{i}") for i in range(40)]
    layer, epochs, info = select({4: x}, y, train, 20, False, 3, recipe, 0)
    assert info["selected"]["layer"] == layer == 4 and info["selected"]["epochs"] == epochs
    assert (layer, float(epochs)) == argmax_point(info["selection"]) and set(info["selection"]["4"]) == {
        str(e) for e in range(1, 7)}
    assert info["selected"]["score"] == info["selection"]["4"][str(epochs)]
