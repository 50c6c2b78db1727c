"""`asit hear-tasks`: local datasets (the embedded corpus, in the real layouts) -> heareval task folders."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.datasets import read_audioset, read_esc50, read_speechcommands, read_voxceleb1
from tasks.hear_export import (TASK_SPECS, carve_valid, plan, prepare_audio, task_metadata, unique_filename,
                               write_hear_task)
from upstream.cli import main
from upstream.errors import AsitError

HEAREVAL_KEYS = {"task_name", "embedding_type", "prediction_type", "split_mode", "splits", "sample_duration",
                 "evaluation"}


@pytest.fixture(scope="module")
def hear_tasks(corpus, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("hear") / "tasks"
    assert main(["hear-tasks", str(out), "--corpus", str(corpus.root)]) == 0
    return out


def split_files(task: Path, split: str) -> set[str]:
    return {p.name for p in (task / "16000" / split).glob("*.wav")}


def test_every_corpus_dataset_becomes_a_task_heareval_can_read(hear_tasks) -> None:
    names = sorted(p.name for p in hear_tasks.iterdir())
    assert names == ["audioset", "esc50", "speechcommands_v1", "speechcommands_v2", "voxceleb1"]
    for task in hear_tasks.iterdir():
        meta = json.loads((task / "task_metadata.json").read_text())
        assert HEAREVAL_KEYS <= set(meta)
        with (task / "labelvocabulary.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        labels = [r["label"] for r in rows]
        assert [int(r["idx"]) for r in rows] == list(range(len(rows))) and labels == sorted(labels)
        for split in meta["splits"]:
            listed = json.loads((task / f"{split}.json").read_text())
            assert set(listed) == split_files(task, split) and listed
            assert all(set(v) <= set(labels) for v in listed.values())
            if meta["prediction_type"] == "multiclass":
                assert all(len(v) == 1 for v in listed.values())
        every = [name for split in meta["splits"] for name in split_files(task, split)]
        assert len(every) == len(set(every))                   # a file is in exactly one split


def test_esc50_is_five_presplit_folds_scored_by_top1(hear_tasks, corpus) -> None:
    task = hear_tasks / "esc50"
    meta = json.loads((task / "task_metadata.json").read_text())
    assert meta["split_mode"] == "presplit_kfold" and meta["nfolds"] == 5
    assert meta["splits"] == ["fold00", "fold01", "fold02", "fold03", "fold04"]
    assert meta["evaluation"][0] == "top1_acc" and meta["sample_duration"] == 5.0
    with (corpus.esc50 / "meta" / "esc50.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:                                            # official fold k -> fold(k-1), label = category
        listed = json.loads((task / f"fold{int(row['fold']) - 1:02d}.json").read_text())
        assert listed[row["filename"]] == [row["category"]]
    info = sf.info(str(task / "16000" / "fold00" / rows[0]["filename"]))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 80000, "PCM_16")


def test_speech_commands_v2_keeps_the_official_lists(hear_tasks, corpus) -> None:
    task = hear_tasks / "speechcommands_v2"
    root = corpus.speechcommands_v2
    for split, listing in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        official = {line.strip().replace("/", "-") for line in (root / listing).read_text().splitlines() if line}
        assert split_files(task, split) == official
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "_background_noise_")
    with (task / "labelvocabulary.csv").open() as handle:
        assert [r["label"] for r in csv.DictReader(handle)] == words
    for name in list(split_files(task, "train"))[:5]:
        assert sf.info(str(task / "16000" / "train" / name)).frames == 16000


def test_speech_commands_v1_is_superb_ks(hear_tasks, corpus) -> None:
    task = hear_tasks / "speechcommands_v1"
    index = read_speechcommands(corpus.speechcommands_v1, "v1", corpus.speechcommands_v1_test)
    test = json.loads((task / "test.json").read_text())
    assert len(test) == len(index.split("test")) and all(k.startswith("speech_commands_test_set_v0.01-") for k in test)
    train = json.loads((task / "train.json").read_text())
    assert any(v == ["_silence_"] for v in train.values()) and any(v == ["_unknown_"] for v in train.values())
    with (task / "labelvocabulary.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 12


def test_voxceleb1_follows_iden_split_and_keeps_whole_utterances(hear_tasks, corpus) -> None:
    task = hear_tasks / "voxceleb1"
    meta = json.loads((task / "task_metadata.json").read_text())
    assert meta["sample_duration"] is None and meta["split_mode"] == "trainvaltest"
    index = read_voxceleb1(corpus.voxceleb1)
    for example in index.examples:
        name = unique_filename(example, index.root)
        assert json.loads((task / f"{example.split}.json").read_text())[name] == list(example.labels)
        assert sf.info(str(task / "16000" / example.split / name)).frames == sf.info(str(example.path)).frames


def test_audioset_gets_a_valid_split_drawn_by_video_and_keeps_multilabels(hear_tasks, corpus) -> None:
    task = hear_tasks / "audioset"
    meta = json.loads((task / "task_metadata.json").read_text())
    assert meta["prediction_type"] == "multilabel" and meta["evaluation"][0] == "mAP"
    assert meta["source_report"]["missing"]["train"] > 0        # taken-down clips are counted, not hidden
    index = read_audioset(corpus.audioset)
    carved = carve_valid(index.examples)
    assert [e.split for e in carved if e.split == "test"] == [e.split for e in index.examples if e.split == "test"]
    valid = {e.group for e in carved if e.split == "valid"}
    assert valid and not valid & {e.group for e in carved if e.split == "train"}
    assert len(valid) == round(len({e.group for e in index.examples if e.split == "train"}) / 9)
    listed = {**json.loads((task / "train.json").read_text()), **json.loads((task / "valid.json").read_text())}
    assert any(len(v) > 1 for v in listed.values())


def test_written_audio_is_the_resampled_clip(corpus, tmp_path) -> None:
    index = read_esc50(corpus.esc50)
    example = index.examples[0]
    wave = prepare_audio(example, 5.0)
    sf.write(str(tmp_path / "x.wav"), wave, 16000, subtype="PCM_16")
    written, sr = sf.read(str(tmp_path / "x.wav"), dtype="float32")
    assert sr == 16000 and written.shape == (80000,)
    np.testing.assert_allclose(written, wave, atol=1 / 32768)
    np.testing.assert_allclose(wave, example.load(16000).numpy()[:80000], atol=1e-6)
    short = prepare_audio(read_speechcommands(corpus.speechcommands_v2, "v2").examples[0], 3.0)
    assert short.shape == (48000,) and not short[-16000:].any()   # zero-padded at the end


def test_rerun_is_a_no_op_a_partial_run_resumes_and_other_data_is_refused(corpus, tmp_path) -> None:
    full = read_esc50(corpus.esc50)
    few = [e for fold in full.folds for e in full.fold(fold)[:4]]         # 4 clips per fold keep this quick
    index = type(full)(full.name, full.root, few, full.labels, folds=full.folds)
    spec = TASK_SPECS["esc50"]
    folder = write_hear_task(index, spec, tmp_path, log=lambda m: None)
    stamp = (folder / "16000" / "fold00").stat().st_mtime_ns, (folder / "task_metadata.json").stat().st_mtime_ns
    assert write_hear_task(index, spec, tmp_path, log=lambda m: None) == folder
    assert ((folder / "16000" / "fold00").stat().st_mtime_ns, (folder / "task_metadata.json").stat().st_mtime_ns) \
        == stamp
    # an interrupted run: the staging folder without metadata and with some audio missing
    partial = tmp_path / "esc50.partial"
    os.rename(folder, partial)
    (partial / "task_metadata.json").unlink()
    (partial / ".plan.json").write_text(json.dumps(task_metadata(index, spec, list(plan(index, spec))),
                                                   sort_keys=True))
    removed = sorted((partial / "16000" / "fold03").iterdir())[:3]
    for path in removed:
        path.unlink()
    messages: list[str] = []
    write_hear_task(index, spec, tmp_path, log=messages.append)
    assert "fold03: 4 clips (1 already written)" in " ".join(messages)
    assert all((folder / "16000" / "fold03" / p.name).is_file() for p in removed)
    assert not (folder / ".plan.json").exists() and not partial.exists()
    # a different dataset under the same task name is refused, then rebuilt with force
    fewer = type(index)(index.name, index.root, index.examples[:-1], index.labels, folds=index.folds)
    (tmp_path / "esc50.partial" / "16000").mkdir(parents=True)           # leftovers of another interrupted run
    (tmp_path / "esc50.partial" / ".plan.json").write_text("{}")
    with pytest.raises(AsitError, match="built differently.*source_clips.*--force"):
        write_hear_task(fewer, spec, tmp_path, log=lambda m: None)
    messages.clear()
    write_hear_task(fewer, spec, tmp_path, force=True, log=messages.append)
    assert sum(len(json.loads((folder / f"fold0{k}.json").read_text())) for k in range(5)) == 19
    assert "(0 already written)" in messages[0]                             # nothing reused from the leftovers
    os.rename(folder, partial)                                               # a partial run of *other* data
    (partial / "task_metadata.json").unlink()
    messages.clear()
    write_hear_task(index, spec, tmp_path, log=messages.append)
    assert "(0 already written)" in messages[0]
    assert sum(len(json.loads((folder / f"fold0{k}.json").read_text())) for k in range(5)) == 20


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["hear-tasks", str(tmp_path / "out")]) == 2
    assert "no dataset given" in capsys.readouterr().err
    assert main(["hear-tasks", str(tmp_path / "out"), "--esc50", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "ESC-50 metadata" in err and err.count("\n") == 1
    assert main(["hear-tasks", str(tmp_path / "out"), "--corpus", str(tmp_path)]) == 2
    assert "no corpus.json" in capsys.readouterr().err


def test_task_specs_use_only_scores_heareval_knows() -> None:
    from heareval.score import available_scores

    for spec in TASK_SPECS.values():
        assert set(spec.evaluation) <= set(available_scores)
