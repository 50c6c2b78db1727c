"""Dataset readers on the real layouts: splits/folds as the files say, and loud errors for missing/malformed input."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.corpus import CorpusPaths
from tasks.datasets import (SUPERB_COMMANDS, read_audioset, read_esc50, read_speechcommands, read_voxceleb1)
from tasks.datasets.audioset import read_segments_csv, ytid_candidates
from tasks.task_data import load_task_data
from upstream.errors import AsitError

e2e = pytest.mark.e2e


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------------ ESC-50


@e2e
def test_esc50_reads_five_folds_and_never_shares_a_source_across_folds(corpus: CorpusPaths) -> None:
    index = read_esc50(corpus.esc50)
    assert index.folds == [1, 2, 3, 4, 5] and len(index.examples) == 50 and index.stats == "esc50"
    rows = (corpus.esc50 / "meta" / "esc50.csv").read_text().splitlines()[1:]
    by_target = {int(r.split(",")[2]): r.split(",")[3] for r in rows}
    assert index.labels == [by_target[t] for t in sorted(by_target)]
    folds_of = defaultdict(set)
    for example in index.examples:
        folds_of[example.group].add(example.fold)
        assert example.path.name.startswith(f"{example.fold}-{example.group}-")
    assert all(len(f) == 1 for f in folds_of.values())
    for fold in index.folds:
        data = load_task_data("esc50", corpus.esc50, fold=fold)
        assert {e.fold for e in data.test} == {fold} and len(data.test) == 10
        assert {e.fold for e in data.train} == set(index.folds) - {fold} and len(data.train) == 40
        assert not {e.group for e in data.train} & {e.group for e in data.test}, "a src_file crossed folds"


def _esc_with_rows(corpus: CorpusPaths, tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    root = copy_tree(corpus.esc50, tmp_path / "ESC-50-master")
    meta = root / "meta" / "esc50.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(edit(lines)) + "\n")
    return root


@e2e
def test_esc50_errors_name_the_bad_rows_and_files(corpus: CorpusPaths, tmp_path: Path) -> None:
    root = _esc_with_rows(corpus, tmp_path / "a", lambda ls: ls[:1] + [ls[1].replace(",1,", ",9,", 1)] + ls[2:])
    with pytest.raises(AsitError, match=r"1 malformed line\(s\) in .*esc50.csv .*fold 1..5.*e.g. 1-"):
        read_esc50(root)
    # a row that contradicts its own file name (fold/target are in the name)
    root = _esc_with_rows(corpus, tmp_path / "c", lambda ls: ls[:1] + [
        ",".join(f if i != 2 else str((int(f) + 1) % 5) for i, f in enumerate(ls[1].split(",")))] + ls[2:])
    with pytest.raises(AsitError, match="malformed"):
        read_esc50(root)
    # a source file in two folds
    first, second = (ln.split(",") for ln in (corpus.esc50 / "meta" / "esc50.csv").read_text().splitlines()[1:3])
    root = _esc_with_rows(corpus, tmp_path / "d", lambda ls: [
        ln if not ln.startswith("2-") or ln == ls[0] else
        ",".join(f if i != 5 else first[5] for i, f in enumerate(ln.split(","))) for ln in ls])
    with pytest.raises(AsitError, match=rf"src_file\(s\) appear in several folds \(e.g. {first[5]} in folds"):
        read_esc50(root)
    # missing audio: the first few paths are listed
    root = copy_tree(corpus.esc50, tmp_path / "e" / "ESC-50-master")
    gone = sorted((root / "audio").iterdir())[:4]
    for path in gone:
        path.unlink()
    with pytest.raises(AsitError, match=r"4 audio file\(s\) listed in .*esc50.csv are missing, e.g. ") as err:
        read_esc50(root)
    assert str(gone[0]) in str(err.value) and str(gone[3]) not in str(err.value)
    with pytest.raises(AsitError, match=r"ESC-50 metadata \(meta/esc50.csv\) not found"):
        read_esc50(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- Speech Commands


def _listed(root: Path, name: str) -> set[str]:
    return {ln.strip() for ln in (root / name).read_text().splitlines() if ln.strip()}


@e2e
def test_speechcommands_v2_follows_the_official_lists(corpus: CorpusPaths) -> None:
    root = corpus.speechcommands_v2
    index = read_speechcommands(root, "v2")
    rel = {split: {e.path.relative_to(root).as_posix() for e in index.split(split)} for split in
           ("train", "valid", "test")}
    assert rel["valid"] == _listed(root, "validation_list.txt")
    assert rel["test"] == _listed(root, "testing_list.txt")
    on_disk = {p.relative_to(root).as_posix() for p in root.glob("*/*.wav") if p.parent.name != "_background_noise_"}
    assert rel["train"] == on_disk - rel["valid"] - rel["test"]
    assert index.labels == sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "_background_noise_")
    assert all(e.labels == (e.path.parent.name,) for e in index.examples)
    speakers = {s: {e.group for e in index.split(s)} for s in ("train", "valid", "test")}
    assert not (speakers["train"] & speakers["valid"] or speakers["train"] & speakers["test"])


@e2e
def test_speechcommands_v1_is_superbs_12_class_task(corpus: CorpusPaths) -> None:
    root = corpus.speechcommands_v1
    index = read_speechcommands(root, "v1")
    assert index.labels == list(SUPERB_COMMANDS) + ["_unknown_", "_silence_"]
    testing = _listed(root, "testing_list.txt")
    for example in index.split("train") + index.split("valid"):
        if example.labels[0] != "_silence_":
            rel = example.path.relative_to(root).as_posix()
            assert rel not in testing, "v0.01 testing_list files are not used (SUPERB tests on its own set)"
            word = example.path.parent.name
            assert example.labels[0] == (word if word in SUPERB_COMMANDS else "_unknown_")
    test = index.split("test")
    assert {e.path.parent.parent for e in test} == {corpus.speechcommands_v1_test}
    assert all(e.labels == (e.path.parent.name,) for e in test)
    assert {e.labels[0] for e in test} == set(index.labels)
    # _silence_: 1 s crops of every background file; the last 20% of each file's crops are valid, contiguously
    crops = [e for e in index.examples if e.labels == ("_silence_",) and e.split != "test"]
    for noise in sorted((root / "_background_noise_").glob("*.wav")):
        mine = sorted((e for e in crops if e.path == noise), key=lambda e: e.start_s)
        count = int(sf.info(str(noise)).duration)
        assert [e.start_s for e in mine] == [float(k) for k in range(count)]
        assert all(e.duration_s == 1.0 for e in mine)
        splits = [e.split for e in mine]
        assert splits == ["train"] * (count - count // 5) + ["valid"] * (count // 5)
    wave = crops[3].load(16000)
    assert wave.shape == (16000,)
    full, _ = sf.read(str(crops[3].path), dtype="float32")
    start = int(crops[3].start_s * 16000)
    np.testing.assert_allclose(wave.numpy(), full[start:start + 16000], atol=1e-6)


@e2e
def test_speechcommands_errors(corpus: CorpusPaths, tmp_path: Path) -> None:
    root = copy_tree(corpus.speechcommands_v2, tmp_path / "v2")
    listed = sorted(_listed(root, "validation_list.txt"))
    (root / listed[0]).unlink()
    with pytest.raises(AsitError, match=rf"1 audio file\(s\) listed in .*validation_list.txt are missing, e.g. "
                                        rf".*{listed[0]}"):
        read_speechcommands(root, "v2")
    (root / "validation_list.txt").write_text("\n".join(listed[1:] + ["not a path"]) + "\n")
    with pytest.raises(AsitError, match=r"malformed line\(s\) in .*validation_list.txt.*not a path"):
        read_speechcommands(root, "v2")
    (root / "validation_list.txt").write_text("\n".join(listed[1:]) + "\n")
    (root / "testing_list.txt").unlink()
    with pytest.raises(AsitError, match=r"split list \(testing_list.txt\) not found"):
        read_speechcommands(root, "v2")
    with pytest.raises(AsitError, match="'v1' or 'v2'"):
        read_speechcommands(corpus.speechcommands_v2, "v3")
    v1 = copy_tree(corpus.speechcommands_v1, tmp_path / "v1" / "speech_commands_v0.01")
    with pytest.raises(AsitError, match="official Speech Commands v0.01 test set folder not found"):
        read_speechcommands(v1, "v1")
    test = copy_tree(corpus.speechcommands_v1_test, tmp_path / "v1" / "speech_commands_test_set_v0.01")
    (test / "bird").mkdir()
    shutil.copy(next((test / "yes").glob("*.wav")), test / "bird" / "x_nohash_0.wav")
    with pytest.raises(AsitError, match="has folder\\(s\\) bird"):
        read_speechcommands(v1, "v1")


# ---------------------------------------------------------------------------------------------------- VoxCeleb1


@e2e
def test_voxceleb1_follows_iden_split(corpus: CorpusPaths) -> None:
    root = corpus.voxceleb1
    index = read_voxceleb1(root)
    lines = [ln.split() for ln in (root / "iden_split.txt").read_text().splitlines()]
    by_path = {(root / "wav" / rel): {"1": "train", "2": "valid", "3": "test"}[s] for s, rel in lines}
    assert {e.path: e.split for e in index.examples} == by_path
    assert index.labels == sorted({rel.split("/")[0] for _, rel in lines})
    assert all(e.labels == (e.path.parent.parent.name,) for e in index.examples)


@e2e
def test_voxceleb1_accepts_the_two_archive_folders_and_lists_missing_files(corpus: CorpusPaths,
                                                                           tmp_path: Path) -> None:
    root = tmp_path / "VoxCeleb1"
    lines = (corpus.voxceleb1 / "iden_split.txt").read_text().splitlines()
    for split, rel in (ln.split() for ln in lines):   # test utterances in vox1_test_wav/wav, the rest in dev
        archive = "vox1_test_wav" if split == "3" else "vox1_dev_wav"
        (root / archive / "wav" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus.voxceleb1 / "wav" / rel, root / archive / "wav" / rel)
    shutil.copy(corpus.voxceleb1 / "iden_split.txt", root)
    index = read_voxceleb1(root)
    assert len(index.examples) == len(lines)
    assert {e.path.parts[-5] for e in index.split("test")} == {"vox1_test_wav"}
    victim = root / ("vox1_test_wav" if lines[0].startswith("3") else "vox1_dev_wav") / "wav" / lines[0].split()[1]
    victim.unlink()
    with pytest.raises(AsitError, match=rf"1 audio file\(s\) listed in .*iden_split.txt are missing .*"
                                        rf"{lines[0].split()[1]}"):
        read_voxceleb1(root)
    (root / "iden_split.txt").write_text("\n".join(lines[1:] + ["4 id10001/x/00001.wav", "1 nope.wav"]) + "\n")
    with pytest.raises(AsitError, match=r"2 malformed line\(s\) in .*iden_split.txt.*4 id10001/x/00001.wav; 1 nope"):
        read_voxceleb1(root)
    with pytest.raises(AsitError, match="VoxCeleb1 audio folder not found"):
        (tmp_path / "empty").mkdir()
        shutil.copy(corpus.voxceleb1 / "iden_split.txt", tmp_path / "empty")
        read_voxceleb1(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------- AudioSet


def test_ytid_candidates_cover_the_documented_naming_schemes() -> None:
    ytid = "-0RWZT-miFs"
    assert ytid_candidates(f"Y{ytid}") == [(ytid, None)]                      # PANNs
    assert ytid_candidates(ytid) == [(ytid, None)]                            # plain
    assert ytid_candidates(f"{ytid}_30.000") == [(ytid, 30.0)]                # AST datafiles
    assert ytid_candidates(f"{ytid}_30000_40000") == [(ytid, 30000.0)]        # audiosetdl (ms)
    assert ytid_candidates(f"{ytid}_30.0-40.0") == [(ytid, 30.0)]             # audioset-download (s)
    assert ytid_candidates("Yabcdefghij") == [("Yabcdefghij", None)]          # an id that starts with Y
    assert ytid_candidates(f"{ytid}_take2") == [] and ytid_candidates("short") == []


@e2e
def test_audioset_reads_the_panns_layout_and_reports_taken_down_clips(corpus: CorpusPaths) -> None:
    index = read_audioset(corpus.audioset)
    classes = (corpus.audioset / "metadata" / "class_labels_indices.csv").read_text().splitlines()[1:]
    assert index.labels == [ln.split(",")[1] for ln in classes] and index.multilabel
    assert index.label_names["/m/02fs_r"] == "Beep, bleep"
    report = index.report
    assert report["listed"] == {"train": 48, "test": 24} and report["missing"] == {"train": 3, "test": 1}
    assert report["found"] == {"train": 45, "test": 23} and report["missing_policy"] == "drop"
    assert len(index.split("train")) == 45 and len(index.split("test")) == 23
    rows = {}
    for name in ("balanced_train_segments", "eval_segments"):
        for line in (corpus.audioset / "metadata" / f"{name}.csv").read_text().splitlines()[3:]:
            rows[line.split(",")[0]] = tuple(line.split('"')[1].split(","))
    for example in index.examples:
        assert example.path.name == f"Y{example.group}.wav" and example.labels == rows[example.group]
    taken_down = set(rows) - {e.group for e in index.examples}
    assert len(taken_down) == 4 and all(t in " ".join(report["missing_examples"]) for t in taken_down)
    with pytest.raises(AsitError, match=r"4 AudioSet clip\(s\) listed are not stored locally \(train: 3, test: 1\)"):
        read_audioset(corpus.audioset, missing="error")
    with pytest.raises(AsitError, match="missing must be one of drop, error"):
        read_audioset(corpus.audioset, missing="skip")


@e2e
def test_audioset_other_naming_schemes_json_datafiles_and_errors(corpus: CorpusPaths, tmp_path: Path) -> None:
    index = read_audioset(corpus.audioset)
    train = index.split("train")
    root = tmp_path / "audioset"
    shutil.copytree(corpus.audioset / "metadata", root)                     # CSVs directly in the root
    rows = {ln.split(",")[0]: float(ln.split(",")[1]) for ln in
            (root / "balanced_train_segments.csv").read_text().splitlines()[3:]}
    names = []
    for i, example in enumerate(train + index.split("test")):
        ytid, start = example.group, rows.get(example.group, None)
        scheme = i % 4
        if scheme == 0 or start is None:
            name = f"{ytid}.wav"
        elif scheme == 1:
            name = f"{ytid}_{int(start * 1000)}_{int(start * 1000) + 3000}.flac"
        elif scheme == 2:
            name = f"{ytid}_{start:.1f}-{start + 3:.1f}.wav"
        else:
            name = f"{ytid}_{start:.3f}.wav"
        target = root / "clips" / ("by_label" if scheme == 2 else "flat") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        audio, rate = sf.read(str(example.path), dtype="float32")
        sf.write(str(target), audio, rate)
        names.append(target)
    # audioset-download copies a clip into each label's folder: duplicates are counted, the first path is used
    shutil.copy(names[2], root / "clips" / names[2].name)
    renamed = read_audioset(root)
    assert renamed.report["found"] == index.report["found"] and renamed.report["duplicates"] == 1
    assert [(e.group, e.labels) for e in renamed.examples] == [(e.group, e.labels) for e in index.examples]
    assert {e.path.suffix for e in renamed.examples} == {".wav", ".flac"}
    # a file naming another segment of a listed video is an error, not a substitute
    ytid = train[1].group
    (root / "clips" / "flat" / f"{ytid}_999000_1002000.flac").write_bytes(b"")
    with pytest.raises(AsitError, match=rf"name a listed video but another segment of it, e.g. .*{ytid}_999000"):
        read_audioset(root)
    (root / "clips" / "flat" / f"{ytid}_999000_1002000.flac").unlink()
    # AST-style JSON datafiles with relative paths; the class list is found beside the CSVs
    datafiles = root / "datafiles"
    datafiles.mkdir()
    for split, examples in (("train", train), ("eval", index.split("test"))):
        entries = [{"wav": str(e.path), "labels": ",".join(e.labels), "video_id": e.group} for e in examples]
        if split == "train":
            entries[0]["wav"] = f"../clips/flat/{names[0].name}"      # relative to the JSON file's folder
        (datafiles / f"{split}.json").write_text(json.dumps({"data": entries}))
    from_json = read_audioset(root, train="datafiles/train.json", test="datafiles/eval.json")
    assert [e.labels for e in from_json.examples] == [e.labels for e in index.examples]
    assert from_json.examples[0].path == datafiles / "../clips/flat" / names[0].name
    broken = json.loads((datafiles / "train.json").read_text())
    broken["data"][1]["labels"] = "/m/notaclass"
    (datafiles / "bad.json").write_text(json.dumps(broken))
    with pytest.raises(AsitError, match="label\\(s\\) /m/notaclass that are not in the class list"):
        read_audioset(root, train="datafiles/bad.json", test="datafiles/eval.json")
    # malformed CSV lines are listed; the class list must exist
    lines = (root / "eval_segments.csv").read_text().splitlines()
    (root / "eval_segments.csv").write_text("\n".join(lines + ["abc, 1.0, 2.0, \"/m/04rlf\""]) + "\n")
    with pytest.raises(AsitError, match=r"1 malformed line\(s\) in .*eval_segments.csv .*abc, 1.0, 2.0"):
        read_audioset(root)
    (root / "class_labels_indices.csv").unlink()
    with pytest.raises(AsitError, match="AudioSet class list not found"):
        read_audioset(root)
    with pytest.raises(AsitError, match="AudioSet train list not found"):
        read_audioset(corpus.audioset, train="unbalanced_train_segments")


def test_segments_csv_parsing(tmp_path: Path) -> None:
    path = tmp_path / "eval_segments.csv"
    path.write_text("# Segments csv created Sun Mar  5 10:54:25 2017\n# num_ytids=2, num_segs=2\n"
                    "# YTID, start_seconds, end_seconds, positive_labels\n"
                    '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk"\n'
                    '--BfvyPmVMo, 20.000, 30.000, "/m/03l9g"\n')
    known = {"/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk", "/m/03l9g"}
    segments = read_segments_csv(path, known)
    assert [(s.ytid, s.start_s, s.end_s, s.labels) for s in segments] == [
        ("--4gqARaEJE", 0.0, 10.0, ("/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk")),
        ("--BfvyPmVMo", 20.0, 30.0, ("/m/03l9g",))]
    path.write_text(path.read_text() + '--BfvyPmVMo, 20.000, 30.000, "/m/03l9g"\n--x, 1, 2, "/m/03l9g"\n')
    with pytest.raises(AsitError, match=r"2 malformed line\(s\).*--BfvyPmVMo, 20.000, 30.000, /m/03l9g; --x"):
        read_segments_csv(path, known)
