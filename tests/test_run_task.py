"""End to end: every task in both modes through `run_task` on the corpus (each dataset in its real layout), with the
tiny encoder and CPU budgets; results must agree with the predictions they were computed from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.api import MODES, TASKS, EncoderSpec, TaskCell
from tasks.corpus import CorpusPaths
from tasks.metrics import evaluate
from tasks.run import PROTOCOLS, run_task
from tasks.task_data import load_task_data
from upstream.cli import main
from upstream.errors import AsitError

e2e = pytest.mark.e2e


pytestmark = pytest.mark.usefixtures("one_torch_thread")

FINETUNE_CPU = {"epochs": 1, "batch_size": 8, "num_workers": 0, "accelerator": "cpu", "train_frames": 64,
                "eval_frames": 64, "warmup_epochs": 0, "log_every_n_steps": 1}
PROBE_CPU = {"num_workers": 0, "n_jobs": 1, "C": [0.1, 1.0], "max_iter": 200}
STATS = {"as20k": "audioset", "esc50": "esc50", "speechcommands_v2": "speechcommands_v2",
         "speechcommands_v1": "speechcommands_v1", "voxceleb1": "voxceleb1"}


def data_root(corpus: CorpusPaths, task: str) -> Path:
    return getattr(corpus, "audioset" if task == "as20k" else task)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedding_cache")


def cell(task: str, mode: str, corpus: CorpusPaths, encoder: Path, cache: Path, **extra: object) -> TaskCell:
    overrides = dict(FINETUNE_CPU) if mode == "finetune" else {**PROBE_CPU, "cache_dir": str(cache)}
    overrides.update(extra)
    return TaskCell(EncoderSpec("tiny", str(encoder)), task, mode, PROTOCOLS[task], seed=0,
                    fold=2 if task == "esc50" else None, data_root=str(data_root(corpus, task)), overrides=overrides)


@e2e
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_in_both_modes(task: str, mode: str, corpus: CorpusPaths, tiny_encoder_file: Path,
                                  cache_dir: Path, tmp_path: Path) -> None:
    the_cell = cell(task, mode, corpus, tiny_encoder_file, cache_dir)
    result = run_task(the_cell, tmp_path)
    data = load_task_data(task, the_cell.data_root, fold=the_cell.fold)
    assert result.metric == ("mAP" if task == "as20k" else "accuracy") and 0.0 <= result.value <= 1.0
    counts = {f"n_{role}": len(getattr(data, role)) for role in ("train", "valid", "test")}
    assert {k: result.extra[k] for k in counts} == counts and result.extra["num_classes"] == data.num_classes
    assert result.extra["protocol"] == data.protocol and result.extra["mode"] == mode
    # the reported value is the metric of the saved predictions, whose targets are the test clips' labels
    saved = np.load(tmp_path / "predictions.npz")
    by_path = {str(e.path): e for e in data.test}
    assert sorted(saved["paths"]) == sorted(by_path)
    np.testing.assert_array_equal(saved["targets"], data.targets([by_path[p] for p in saved["paths"]]))
    assert saved["scores"].shape == (len(data.test), data.num_classes)
    assert evaluate(saved["targets"], saved["scores"], data.multilabel)[result.metric] == pytest.approx(result.value)
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["value"] == pytest.approx(result.value) and written["extra"]["protocol"] == data.protocol
    assert written["extra"]["recipe"] == f"{task}_{mode}"
    assert (tmp_path / "recipe.yaml").is_file()
    if task == "as20k":
        assert result.extra["dataset_report"]["missing"] == {"train": 3, "test": 1}
        assert result.extra["dataset_report"]["missing_policy"] == "drop" and "mAUC" in result.extra["metrics"]
    if mode == "finetune":
        assert result.extra["epochs"] == 1 and result.extra["frontend"]["stats"] == STATS[task]
        assert not (tmp_path / "checkpoints").exists(), "checkpoints are removed once the metric is written"
        if data.valid:
            assert result.extra["best_epoch"] == 1 and len(result.extra["valid_history"]) == 1
    else:
        assert result.extra["frontend"]["stats"] == "audioset", "probes use the checkpoint's own frontend"
        assert result.extra["encoder_forwards"] > 0 and result.extra["cache_misses"] == len(data.parts)
        assert result.extra["precision"] == "fp32", "the recipe's precision: auto, resolved (conftest: no bf16)"
        # C is chosen on valid (or grouped CV over training folds / groups), the final probe fit on every label
        assert result.extra["n_fit"] == len(data.train) + len(data.valid)
        assert result.extra["fit_on"] == ("train+valid" if data.valid else "train")
        assert result.extra["selection_on"] == ("valid split" if data.valid else
                                                "4-fold cross-validation over the training folds" if task == "esc50"
                                                else "5-fold cross-validation over the training groups")
        if task == "voxceleb1":   # even a random tiny encoder separates the 8 synthetic speakers (chance 1/8)
            assert result.value >= 0.3
    assert result.extra["encoder_arch"] == "vit"
    assert result.extra["predictions"] == str((tmp_path / "predictions.npz").resolve())


@e2e
def test_cli_probe_prints_the_metric_and_reuses_the_cache(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                          cache_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["probe", "voxceleb1", "--encoder", str(tiny_encoder_file), "--data", str(corpus.voxceleb1),
            "--work-dir", str(tmp_path / "w"), *(f"{k}={v}" for k, v in PROBE_CPU.items() if k != "C"),
            "C=[0.1,1.0]", f"cache_dir={cache_dir}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "asit probe: voxceleb1 accuracy " in out and "(train 40, test 16)" in out
    result = json.loads((tmp_path / "w" / "result.json").read_text())
    assert f"accuracy {result['value']:.4f}" in out and result["extra"]["encoder_forwards"] == 0


@e2e
def test_cells_that_do_not_fit_the_protocol_are_refused(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                        tmp_path: Path) -> None:
    base = cell("esc50", "probe", corpus, tiny_encoder_file, tmp_path)
    with pytest.raises(AsitError, match="evaluated under protocol 'esc50/train4-test1', not 'esc50/3-1-1'"):
        run_task(TaskCell(**{**base.__dict__, "protocol": "esc50/3-1-1"}), tmp_path)
    with pytest.raises(AsitError, match="give the held-out fold"):
        run_task(TaskCell(**{**base.__dict__, "fold": None}), tmp_path)
    with pytest.raises(AsitError, match="fold 6 does not exist"):
        run_task(TaskCell(**{**base.__dict__, "fold": 6}), tmp_path)
    vox = cell("voxceleb1", "finetune", corpus, tiny_encoder_file, tmp_path)
    with pytest.raises(AsitError, match="--fold applies to esc50 only"):
        run_task(TaskCell(**{**vox.__dict__, "fold": 1}), tmp_path)
    with pytest.raises(AsitError, match="unknown task 'as2m'"):
        run_task(TaskCell(**{**vox.__dict__, "task": "as2m"}), tmp_path)
    with pytest.raises(AsitError, match="dataset option\\(s\\) test_root are not understood by the voxceleb1 reader"):
        run_task(TaskCell(**{**vox.__dict__, "overrides": {"dataset": {"test_root": "x"}}}), tmp_path)
    with pytest.raises(AsitError, match="select=best_valid but esc50 has no validation split"):
        run_task(TaskCell(**{**base.__dict__, "mode": "finetune", "overrides": {**FINETUNE_CPU,
                                                                                "select": "best_valid"}}), tmp_path)
    with pytest.raises(AsitError, match="4 AudioSet clip\\(s\\) listed are not stored locally"):
        run_task(cell("as20k", "probe", corpus, tiny_encoder_file, tmp_path, dataset={"missing": "error"}), tmp_path)
    with pytest.raises(AsitError, match="ESC-50 metadata .* not found"):
        run_task(TaskCell(**{**base.__dict__, "data_root": str(tmp_path / "nowhere")}), tmp_path)


@e2e
def test_finetuning_learns_the_corpus_classes(corpus: CorpusPaths, tiny_encoder_file: Path, tmp_path: Path) -> None:
    """20 short epochs lift a random tiny ViT from chance (1/5) on ESC-50 fold 1; augmentation off to be quick."""
    learn = {"epochs": 20, "train_frames": 128, "eval_frames": 128, "warmup_epochs": 1, "time_mask": 0,
             "freq_mask": 0, "drop_path": 0.0}
    the_cell = cell("esc50", "finetune", corpus, tiny_encoder_file, tmp_path, **learn)
    result = run_task(TaskCell(**{**the_cell.__dict__, "fold": 1}), tmp_path)
    assert result.value >= 0.5 and result.extra["epochs"] == 20


@e2e
def test_an_interrupted_finetune_resumes_from_its_last_checkpoint(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import finetune

    the_cell = cell("voxceleb1", "finetune", corpus, tiny_encoder_file, tmp_path, epochs=2)

    def crash_in_second_epoch(self: finetune.FinetuneModule) -> None:
        if self.current_epoch == 1:
            raise RuntimeError("power cut")

    monkeypatch.setattr(finetune.FinetuneModule, "on_train_epoch_start", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="power cut"):
        run_task(the_cell, tmp_path)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "result.json").exists()
    monkeypatch.undo()
    resumed = run_task(the_cell, tmp_path)
    fresh = run_task(the_cell, tmp_path / "fresh")
    assert resumed.extra["resumed"] and not fresh.extra["resumed"]
    assert resumed.extra["steps"] == fresh.extra["steps"] == 2 * (40 // 8)
    assert [e for e, _ in resumed.extra["valid_history"]] == [1, 2], "the first epoch's validation is kept"


@e2e
def test_scratch_rows_use_the_same_architecture_with_seeded_fresh_weights(corpus: CorpusPaths,
                                                                          tiny_encoder_file: Path,
                                                                          cache_dir: Path, tmp_path: Path) -> None:
    pretrained = cell("voxceleb1", "probe", corpus, tiny_encoder_file, cache_dir)
    # (seed 3: the fixture file itself is a seed-0 random init, which seed 0 would redraw exactly)
    scratch = TaskCell(**{**pretrained.__dict__, "seed": 3,
                          "encoder": EncoderSpec("tiny-scratch", str(tiny_encoder_file), "scratch")})
    a = run_task(pretrained, tmp_path / "pretrained")
    b = run_task(scratch, tmp_path / "scratch")
    again = run_task(scratch, tmp_path / "scratch-again")
    assert b.extra["init"] == "scratch" and b.extra["embedding_dim"] == a.extra["embedding_dim"]
    assert b.extra["encoder_forwards"] > 0 and again.extra["encoder_forwards"] == 0 and again.value == b.value
    scores = [np.load(tmp_path / name / "predictions.npz")["scores"] for name in ("pretrained", "scratch")]
    assert not np.allclose(scores[0], scores[1])


@e2e
def test_finetune_from_an_official_asit_checkpoint(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                   tmp_path: Path) -> None:
    """Official files (teacher/student dicts of `backbone.` weights) load with their 32 kHz frontend; the task's
    Table I statistics replace the pretraining ones for finetuning."""
    state = torch.load(tiny_encoder_file, weights_only=True)["state_dict"]
    official = tmp_path / "checkpoint.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()},
                "student": {f"module.backbone.{k}": v for k, v in state.items()}, "epoch": 99}, official)
    the_cell = cell("voxceleb1", "finetune", corpus, official, tmp_path, select="last")
    result = run_task(the_cell, tmp_path / "run")
    assert result.extra["encoder_source"] == "official"
    assert result.extra["frontend"]["sample_rate"] == 32000 and result.extra["frontend"]["stats"] == "voxceleb1"
    assert result.extra["frontend"]["mean"] == -6.370 and result.extra["frontend"]["std"] == 3.074


@e2e
def test_finetuning_is_reproducible_from_the_seed(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                  tmp_path: Path) -> None:
    """Same cell twice -> identical predictions (crops, masks, dropout, shuffling all drawn from cell.seed)."""
    the_cell = cell("as20k", "finetune", corpus, tiny_encoder_file, tmp_path, drop_path=0.1)
    runs = [run_task(the_cell, tmp_path / name) for name in ("a", "b")]
    other = run_task(TaskCell(**{**the_cell.__dict__, "seed": 1}), tmp_path / "c")
    scores = [np.load(tmp_path / name / "predictions.npz")["scores"] for name in ("a", "b", "c")]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert runs[0].value == runs[1].value and not np.array_equal(scores[0], scores[2])
    assert other.extra["seed"] == 1
