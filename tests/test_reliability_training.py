"""Reliability of training runs: checkpoints that survive a crash, run folders that are not silently overwritten,
resumes that do not fit, corrupt clips read in DataLoader workers, folds checked before work, worker counts."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from tasks.api import EncoderSpec, TaskCell, TaskResult
from tasks.corpus import CorpusPaths
from tasks.recipes import FinetuneRecipe, ProbeRecipe, load_recipe
from tasks.run import PROTOCOLS, run_task
from upstream.cli import main
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig, load_audio
from upstream.pretrain import load_pretrain_config, read_metrics
from upstream.pretrain_config import DataConfig, load_pretrain_config_dict
from upstream.pretrain_data import PretrainDataModule
from upstream.workers import resolve_num_workers, worker_message

from conftest import TINY_PRETRAIN_OVERRIDES, write_tone_clips

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FINETUNE_CPU = {"epochs": 1, "batch_size": 8, "num_workers": 0, "accelerator": "cpu", "train_frames": 64,
                "eval_frames": 64, "warmup_epochs": 0, "log_every_n_steps": 1}


def finetune_cell(corpus: CorpusPaths, encoder: Path, **extra: object) -> TaskCell:
    return TaskCell(EncoderSpec("tiny", str(encoder)), "voxceleb1", "finetune", PROTOCOLS["voxceleb1"], seed=0,
                    data_root=str(corpus.voxceleb1), overrides={**FINETUNE_CPU, **extra})


def error_line(err: str) -> str:
    """The CLI's error: its last stderr line (Lightning's own start-up lines come before it)."""
    lines = err.strip().splitlines()
    return lines[-1] if lines else ""


def pretrain_args(source: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["pretrain", "demo_tiny", *TINY_PRETRAIN_OVERRIDES, "trainer.max_epochs=1", f"data.source={source}",
            f"run_dir={run_dir}", *extra]


def corrupt(path: Path) -> None:
    """A WAV header without a data chunk: soundfile cannot read it (a truncated download)."""
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(40)))


# ------------------------------------------------------------------------------- 1. finetuning keeps last.ckpt

@pytest.fixture(scope="module")
def interrupted_finetune(corpus: CorpusPaths, tiny_encoder_file: Path,
                         tmp_path_factory: pytest.TempPathFactory) -> tuple[TaskCell, Path]:
    """A select=last finetune (Lightning save_top_k=0, as the esc50/as20k recipes) killed in its second epoch."""
    from tasks import finetune

    cell = finetune_cell(corpus, tiny_encoder_file, epochs=2, select="last")
    work = tmp_path_factory.mktemp("interrupted") / "run"

    def crash_in_second_epoch(self: finetune.FinetuneModule) -> None:
        if self.current_epoch == 1:
            raise RuntimeError("power cut")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune.FinetuneModule, "on_train_epoch_start", crash_in_second_epoch)
        with pytest.raises(RuntimeError, match="power cut"):
            run_task(cell, work)
    return cell, work


def test_a_select_last_finetune_writes_last_ckpt_every_epoch_and_resumes_from_it(
        interrupted_finetune: tuple[TaskCell, Path], tmp_path: Path) -> None:
    cell, original = interrupted_finetune
    work = tmp_path / "run"
    shutil.copytree(original, work)
    last = work / "checkpoints" / "last.ckpt"
    assert last.is_file(), "the first epoch's checkpoint must exist although save_top_k is 0"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 40 // 8)
    assert not (work / "result.json").exists()
    resumed = run_task(cell, work)
    assert resumed.extra["resumed"] is True
    assert resumed.extra["steps"] == 2 * (40 // 8) and resumed.extra["epochs"] == 2


def test_a_requeued_submitit_cell_resumes_its_finetune_from_the_last_epoch(
        interrupted_finetune: tuple[TaskCell, Path], tmp_path: Path) -> None:
    """What submitit does on preemption: `CellJob.checkpoint` is pickled with the cell, and the requeued task runs
    it in the same work folder, where Lightning's last.ckpt of the first epoch is."""
    import json

    import submitit

    from benchmarks.parallel import ROW_FILE, CellJob
    from benchmarks.suite import DEFAULT_RUNNER, PlannedCell

    cell, original = interrupted_finetune
    planned = PlannedCell(cell, key="k" * 64, checkpoint_sha256="")
    shutil.copytree(original, planned.work_dir(tmp_path))
    requeued = CellJob().checkpoint(planned, DEFAULT_RUNNER, str(tmp_path), "suite")
    assert isinstance(requeued, submitit.helpers.DelayedSubmission)
    requeued.dump(tmp_path / "requeued.pkl")
    row = submitit.helpers.DelayedSubmission.load(tmp_path / "requeued.pkl").result()
    assert row["status"] == "ok", row.get("error")
    assert row["extra"]["resumed"] is True
    assert (row["extra"]["steps"], row["extra"]["epochs"]) == (2 * (40 // 8), 2)
    assert json.loads((planned.work_dir(tmp_path) / ROW_FILE).read_text())["key"] == planned.key


# --------------------------------------------------------------- 2. pretraining refuses an earlier run's folder

def test_pretrain_into_a_folder_holding_an_earlier_run_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import upstream.pretrain as pretrain

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run folder must be checked before data is listed or a model built")

    monkeypatch.setattr(pretrain, "list_clips", no_work)
    monkeypatch.setattr(pretrain, "PretrainModule", no_work)
    monkeypatch.setattr(pretrain, "PretrainDataModule", no_work)
    for marker, named in (("encoder.pt", "encoder.pt"), ("checkpoints/last.ckpt", "checkpoints/")):
        run_dir = tmp_path / marker.replace("/", "_")
        (run_dir / marker).parent.mkdir(parents=True)
        (run_dir / marker).write_text("an earlier run\n")
        code = main(pretrain_args(tmp_path / "no-such-data", run_dir))
        assert code == 2
        assert capsys.readouterr().err.strip() == (
            f"asit pretrain: error: run folder {run_dir} already holds an earlier run ({named}); "
            "pass --resume auto to continue it or --overwrite to train from scratch and replace it")
        assert (run_dir / marker).read_text() == "an earlier run\n"
    # an empty folder (or an empty checkpoints/) is no earlier run: the data check is what fails then
    monkeypatch.undo()
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    assert main(pretrain_args(tmp_path / "no-such-data", empty)) == 2
    assert "no-such-data does not exist" in error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit):       # argparse: the two are mutually exclusive
        main(pretrain_args(tmp_path / "no-such-data", empty, "--resume", "auto", "--overwrite"))


def test_pretrain_overwrite_replaces_the_earlier_run_and_trains_from_scratch(
        tmp_path: Path, tone_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    for stale in ("checkpoints/epoch099.ckpt", "checkpoints/last.ckpt", "encoder.pt", "summary.json",
                  "logs/version_0/metrics.csv", "logs/version_1/metrics.csv", "tensorboard/version_0/events"):
        (run_dir / stale).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / stale).write_text("stale\n")
    (run_dir / "config.yaml").write_text("seed: 123\n")
    (run_dir / "notes.txt").write_text("mine\n")
    assert main(pretrain_args(tone_folder, run_dir, "--overwrite")) == 0
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, 8 // 4), "trained from scratch, one epoch"
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == ["version_0"]
    assert read_metrics(run_dir)["train/loss_step"].notna().sum() == 2
    assert torch.load(run_dir / "encoder.pt", map_location="cpu", weights_only=True)["format"] == "asit-hear/encoder"
    assert "seed: 0" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "notes.txt").read_text() == "mine\n", "only the run's own outputs are removed"


# ----------------------------------------------------------------------- 3a. resumes that do not fit the model

def test_a_pretraining_resume_checkpoint_of_another_shape_is_one_line_before_training(
        tmp_path: Path, tone_folder: Path, tiny_encoder_file: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import upstream.pretrain as pretrain

    # a Lightning checkpoint of the 64-wide tiny ASiT (what checkpoints/last.ckpt holds: state_dict + loop state)
    config = load_pretrain_config("demo_tiny", TINY_PRETRAIN_OVERRIDES + [f"data.source={tone_folder}"])
    ckpt = tmp_path / "other" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"epoch": 0, "global_step": 2, "pytorch-lightning_version": "2.6.6",
                "state_dict": pretrain.PretrainModule(config).state_dict()}, ckpt)

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint must be checked before the data is set up")

    monkeypatch.setattr(pretrain, "PretrainDataModule", no_data)
    run_dir = tmp_path / "narrow"
    code = main(pretrain_args(tone_folder, run_dir, "encoder.embed_dim=32", "--resume", str(ckpt)))
    line = error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(f"asit pretrain: error: --resume checkpoint {ckpt} does not fit the model being trained: ")
    assert re.search(r"tensor\(s\) differ in shape: objective\.\S+ (\d+x)*64 in the checkpoint vs (\d+x)*32 in the "
                     r"model", line)
    assert not (run_dir / "checkpoints").exists()
    code = main(pretrain_args(tone_folder, tmp_path / "export", "--resume", str(tiny_encoder_file)))
    assert code == 2 and error_line(capsys.readouterr().err) == (
        f"asit pretrain: error: --resume checkpoint {tiny_encoder_file} is an exported encoder, not a Lightning "
        "training checkpoint (resume from a run's checkpoints/last.ckpt)")


def test_a_finetune_resume_checkpoint_of_another_shape_is_one_line(interrupted_finetune: tuple[TaskCell, Path],
                                                                     tmp_path: Path) -> None:
    cell, original = interrupted_finetune
    work = tmp_path / "run"
    shutil.copytree(original, work)
    last = work / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    weight = saved["state_dict"]["model.head.1.weight"]
    classes, width = weight.shape
    saved["state_dict"]["model.head.1.weight"] = torch.zeros(classes + 3, width)
    saved["state_dict"]["model.head.1.bias"] = torch.zeros(classes + 3)
    torch.save(saved, last)
    with pytest.raises(AsitError) as caught:
        run_task(cell, work)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"interrupted run's checkpoint {last} does not fit the model being trained: "
                              "2 tensor(s) differ in shape: ")
    assert f"model.head.1.weight {classes + 3}x{width} in the checkpoint vs {classes}x{width} in the model" in message
    assert message.endswith(f"delete {work} (or choose another work folder) to start afresh")
    assert not (work / "result.json").exists()


# -------------------------------------------------------------- 3b. a corrupt clip read in a DataLoader worker

def test_a_corrupt_clip_in_a_pretraining_worker_is_the_readers_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clips = write_tone_clips(tmp_path / "clips", 8)
    corrupt(clips[3])
    with pytest.raises(AsitError) as direct:
        load_audio(clips[3])
    code = main(pretrain_args(tmp_path / "clips", tmp_path / "run", "data.num_workers=1"))
    err = capsys.readouterr().err
    assert code == 2
    assert error_line(err) == f"asit pretrain: error: {direct.value}"
    assert str(clips[3]) in error_line(err)
    assert "Traceback" not in err and "DataLoader worker" not in err


def test_a_corrupt_clip_in_a_finetuning_or_probe_worker_is_the_readers_one_line_error(
        corpus: CorpusPaths, tiny_encoder_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "VoxCeleb1"
    shutil.copytree(corpus.voxceleb1, data)
    train = [line.split()[1] for line in (data / "iden_split.txt").read_text().splitlines() if line.startswith("1 ")]
    bad = data / "wav" / train[5]
    corrupt(bad)
    with pytest.raises(AsitError) as direct:
        load_audio(bad)
    overrides = [f"{k}={v}" for k, v in {**FINETUNE_CPU, "num_workers": 1, "batch_size": 1000}.items()]
    code = main(["finetune", "voxceleb1", "--encoder", str(tiny_encoder_file), "--data", str(data),
                 "--work-dir", str(tmp_path / "work"), *overrides])   # one batch: every training clip is read
    err = capsys.readouterr().err
    assert code == 2
    assert error_line(err) == f"asit finetune: error: {direct.value}"
    assert "Traceback" not in err and "DataLoader worker" not in err
    # the probe's loader too (run_task unwraps for both modes)
    code = main(["probe", "voxceleb1", "--encoder", str(tiny_encoder_file), "--data", str(data), "--work-dir",
                 str(tmp_path / "probe"), "num_workers=1", "n_jobs=1", f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert error_line(err) == f"asit probe: error: {direct.value}"
    assert "Traceback" not in err and "DataLoader worker" not in err


def test_worker_message_unwraps_torchs_rewrapped_error_and_leaves_others_alone() -> None:
    wrapped = AsitError("Caught AsitError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\n    raise AsitError(...)\nupstream.errors.AsitError: "
                        "audio file /d/a.wav could not be read: Error in WAV file.")
    assert worker_message(wrapped) == "audio file /d/a.wav could not be read: Error in WAV file."
    assert worker_message(AsitError("data.source x does not exist")) is None
    assert worker_message(RuntimeError("Caught AsitError in DataLoader worker process 0.\nAsitError: x")) is None


# -------------------------------------------------------------------------- 4. every --fold checked up front

def test_every_fold_is_checked_before_the_first_fold_trains(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.run

    trained: list[int | None] = []

    def fake_run_task(cell: TaskCell, work_dir: Path) -> TaskResult:
        trained.append(cell.fold)
        return TaskResult("accuracy", 0.5, {})

    monkeypatch.setattr(tasks.run, "run_task", fake_run_task)
    base = ["finetune", "esc50", "--encoder", str(tiny_encoder_file), "--data", str(corpus.esc50),
            "--work-dir", str(tmp_path / "work"), *[f"{k}={v}" for k, v in FINETUNE_CPU.items()]]
    code = main([*base, "--fold", "1", "--fold", "2", "--fold", "9"])
    assert code == 2 and trained == []
    assert capsys.readouterr().err.strip() == (
        f"asit finetune: error: --fold 9: {corpus.esc50} has no such esc50 fold (its folds: 1, 2, 3, 4, 5); "
        "nothing was run")
    probe = ["probe", *base[1:base.index("--work-dir")], "--fold", "3", "--fold", "6"]
    assert main(probe) == 2 and trained == []                        # the probe checks them the same way
    assert capsys.readouterr().err.strip().startswith("asit probe: error: --fold 6: ")
    code = main([*base, "--fold", "2", "--fold", "2"])
    assert code == 2 and trained == []
    assert capsys.readouterr().err.strip() == "asit finetune: error: --fold 2 given more than once"
    assert main([*base, "--fold", "1", "--fold", "5"]) == 0 and trained == [1, 5]


# --------------------------------------------------------------------------- 5. num_workers follows the machine

@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 1), (4, 3), (9, 8), (64, 8)])
def test_auto_workers_are_the_usable_cores_minus_one_up_to_eight(cores: int, expected: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 256)       # the affinity mask wins over the machine's count
    assert resolve_num_workers("auto") == expected
    assert resolve_num_workers(5) == 5 and resolve_num_workers(0) == 0    # explicit numbers are honoured
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)          # macOS / Windows
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert resolve_num_workers("auto") == expected


def test_num_workers_defaults_to_auto_everywhere_and_bad_values_name_the_key(
        monkeypatch: pytest.MonkeyPatch, tone_folder: Path) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert DataConfig().num_workers == "auto"
    assert FinetuneRecipe(task="esc50").num_workers == 2 and ProbeRecipe(task="esc50").num_workers == 2
    assert load_recipe("esc50", "finetune", overrides=["num_workers=auto"]).num_workers == 2
    assert load_recipe("esc50", "probe", overrides=["num_workers=auto"]).num_workers == 2
    assert load_recipe("esc50", "finetune").num_workers == 2 and load_recipe("esc50", "probe").num_workers == 2
    assert load_recipe("esc50", "finetune", overrides=["num_workers=7"]).num_workers == 7
    data = PretrainDataModule(DataConfig(source=str(tone_folder), crop_frames=64, batch_size=4), FrontendConfig(), 0)
    data.setup()
    assert data.train_dataloader().num_workers == 2
    assert load_pretrain_config_dict({"data": {"num_workers": 1}}).data.num_workers == 1
    for bad in (-1, "many", 2.5):
        with pytest.raises(AsitError, match=r"^data\.num_workers must be 'auto' or a whole number >= 0, got "):
            load_pretrain_config_dict({"data": {"num_workers": bad}})
        for mode in ("finetune", "probe"):
            with pytest.raises(AsitError, match=r"^recipe num_workers must be 'auto' or a whole number >= 0, got "):
                load_recipe("esc50", mode, overrides={"num_workers": bad})
    with pytest.raises(AsitError, match="num_workers"):
        resolve_num_workers(True)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [resolve_num_workers("auto", processes=n) for n in (1, 2, 8, 16)] == [8, 7, 1, 0]   # DDP ranks share


def test_only_the_jobs_first_process_checks_and_clears_the_run_folder(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's DDP launcher re-runs the command with LOCAL_RANK=1.. once rank 0 has begun to fill the folder."""
    from upstream.pretrain import check_run_dir, remove_earlier_run

    (tmp_path / "config.yaml").write_text("rank 0 wrote this\n")
    check_run_dir(tmp_path, None, overwrite=False)     # a config alone: a run that died early, or another rank's
    (tmp_path / "encoder.pt").write_text("an earlier run\n")
    with pytest.raises(AsitError, match="already holds an earlier run"):
        check_run_dir(tmp_path, None, overwrite=False)
    for name in ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"):
        with monkeypatch.context() as env:
            env.setenv(name, "1")
            check_run_dir(tmp_path, None, overwrite=False)
            remove_earlier_run(tmp_path)
            assert (tmp_path / "config.yaml").is_file()
    with pytest.raises(AsitError, match="--resume and --overwrite contradict each other"):
        check_run_dir(tmp_path, "auto", overwrite=True)
    remove_earlier_run(tmp_path)
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "encoder.pt").exists()
