"""End to end, as a user runs it: `asit hear-tasks` -> `python -m heareval.embeddings.runner asit_hear --model ENC
--tasks-dir TASKS` -> `python -m heareval.predictions.runner embeddings/asit_hear/*` -> `hear-validator asit_hear
--model ENC`, all heareval's own code in subprocesses, driven by the demo's HEAR stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import asit_hear
from asit_hear.demo_stage import stage_hear
from asit_hear.runners import embeddings_command, predictions_command, run_command, validator_command
from upstream.demo import DemoContext

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(corpus, tiny_encoder_file, tmp_path_factory):  # type: ignore[no-untyped-def]
    ctx = DemoContext(out_dir=tmp_path_factory.mktemp("demo"), corpus=corpus, encoder=Path(tiny_encoder_file))
    with pytest.MonkeyPatch.context() as patch:
        # the literal commands must work as installed: no weights_only escape hatch from the caller's shell
        patch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
        stage_hear(ctx, datasets=("esc50", "speechcommands_v2"), grid="faster", grid_points=1)
    return ctx


def test_the_commands_are_the_literal_ones(tmp_path) -> None:
    python = embeddings_command(Path("enc.pt"), Path("tasks"))[0]
    assert embeddings_command(Path("enc.pt"), Path("tasks")) == [
        python, "-m", "heareval.embeddings.runner", "asit_hear", "--model", "enc.pt", "--tasks-dir", "tasks"]
    assert predictions_command([Path("embeddings/asit_hear/esc50")], "faster", 1) == [
        python, "-m", "heareval.predictions.runner", "embeddings/asit_hear/esc50", "--grid", "faster",
        "--grid-points", "1"]
    command = validator_command(Path("enc.pt"))
    assert Path(command[0]).name == "hear-validator" and command[1:] == ["asit_hear", "--model", "enc.pt"]


def test_predictions_runner_scores_a_kfold_scene_task_and_speech_commands(demo) -> None:
    work = Path(demo.out_dir) / "hear"
    esc50 = work / "embeddings" / "asit_hear" / "esc50"
    scores = json.loads((esc50 / "test.predicted-scores.json").read_text())
    assert sorted(k for k in scores if k.startswith("fold")) == [f"fold0{k}" for k in range(5)]
    assert "aggregated_scores" in scores and (esc50 / "prediction-done.json").is_file()
    commands = json.loads((work / "embeddings" / "asit_hear" / "speechcommands_v2" /
                           "test.predicted-scores.json").read_text())
    assert 0.0 <= commands["test"]["test_top1_acc"] <= 1.0
    assert (work / "logs").is_dir()                       # heareval's Lightning logs stay in the work dir
    report = demo.report["hear"]
    assert report["validator"] == "passed" and set(report["tasks"]) == {"esc50", "speechcommands_v2"}
    assert report["tasks"]["esc50"]["metric"] == "top1_acc" and len(report["tasks"]["esc50"]["folds"]) == 5
    assert report["tasks"]["esc50"]["score"] == pytest.approx(np.mean(list(report["tasks"]["esc50"]["folds"].values())))
    assert report["tasks"]["speechcommands_v2"]["score"] == pytest.approx(commands["test"]["test_top1_acc"])


def test_hear_validator_prints_success(demo) -> None:
    log = (Path(demo.out_dir) / "hear" / "validator.log").read_text()
    assert "Looks good!" in log and "Interval between timestamps is 40.0ms" in log


@pytest.mark.native_precision
def test_heareval_embeddings_are_the_modules_own(demo, tiny_encoder_file) -> None:
    """What heareval stored (computed in its batches of 84 clips) equals asit_hear on that one file."""
    work = Path(demo.out_dir) / "hear"
    model = asit_hear.load_model(str(tiny_encoder_file))
    for task, split in (("esc50", "fold02"), ("speechcommands_v2", "test")):
        wav = sorted((work / "tasks" / task / "16000" / split).glob("*.wav"))[0]
        stored = np.load(work / "embeddings" / "asit_hear" / task / split / f"{wav.name}.embedding.npy")
        audio, sr = sf.read(str(wav), dtype="float32")
        mine = asit_hear.get_scene_embeddings(torch.from_numpy(audio)[None], model)[0].numpy()
        assert sr == 16000 and stored.dtype == np.float32
        np.testing.assert_allclose(stored, mine, atol=1e-5, rtol=0)
        dims = json.loads((work / "embeddings" / "asit_hear" / task / f"{split}.embedding-dimensions.json")
                          .read_text())
        assert dims[1] == model.scene_embedding_size


@pytest.mark.native_precision
def test_model_options_pass_through_heareval(demo, tiny_encoder_file) -> None:
    """`--model-options` reaches load_model: heareval names the folder after them, and the vectors are the
    options' own."""
    work = Path(demo.out_dir) / "hear"
    options = {"layers": [1, 2], "pooling": "cls"}
    command = embeddings_command(Path(tiny_encoder_file), work / "tasks", "speechcommands_v2", options)
    assert command[-2:] == ["--model-options", '{"layers": [1, 2], "pooling": "cls"}']
    run_command(command, work, work / "options.log", {"CUDA_VISIBLE_DEVICES": ""})
    task = work / "embeddings" / "asit_hear-layers=1-2-pooling=cls" / "speechcommands_v2"
    assert json.loads((task / "test.embedding-dimensions.json").read_text())[1] == 128
    wav = sorted((work / "tasks" / "speechcommands_v2" / "16000" / "test").glob("*.wav"))[-1]
    audio, _ = sf.read(str(wav), dtype="float32")
    model = asit_hear.load_model(str(tiny_encoder_file), **options)
    mine = asit_hear.get_scene_embeddings(torch.from_numpy(audio)[None], model)[0].numpy()
    np.testing.assert_allclose(np.load(task / "test" / f"{wav.name}.embedding.npy"), mine, atol=1e-5, rtol=0)


def test_heareval_runners_and_validator_on_a_conformer_encoder(corpus, tiny_conformer_file: Path,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """The registered conformer through heareval's own embeddings and predictions runners and hear-validator."""
    ctx = DemoContext(out_dir=tmp_path_factory.mktemp("conformer_demo"), corpus=corpus,
                      encoder=Path(tiny_conformer_file))
    stage_hear(ctx, datasets=("speechcommands_v2",), grid="faster", grid_points=1)
    report = ctx.report["hear"]
    assert report["validator"] == "passed"
    assert 0.0 <= report["tasks"]["speechcommands_v2"]["score"] <= 1.0
    log = (Path(ctx.out_dir) / "hear" / "validator.log").read_text()
    assert "Looks good!" in log and "Interval between timestamps is 40.0ms" in log
    task = Path(ctx.out_dir) / "hear" / "embeddings" / "asit_hear" / "speechcommands_v2"
    model = asit_hear.load_model(str(tiny_conformer_file))
    [first] = sorted((task / "test").glob("*.embedding.npy"))[:1]
    assert np.load(first).shape == (model.scene_embedding_size,) == (32,)
