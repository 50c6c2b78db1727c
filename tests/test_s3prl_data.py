"""`asit s3prl-data` on small hand-made layouts: links instead of copies, filled-in configs, s3prl's own KS split
compared with the list files, SID speaker-id range, re-runs and refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from tasks.corpus.speechcommands import draw_speaker_id
from tasks.s3prl_data import prepare_speech_commands, prepare_voxceleb1
from upstream.cli import main as cli
from upstream.errors import AsitError

WORDS = ("yes", "no", "cat")
TEST_CLASSES = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_")


def write_wav(path: Path, seconds: float = 0.2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)


def make_speech_commands(base: Path, mislabel_validation: bool = False) -> Path:
    """v0.01-style folder whose lists follow the hash rule (or not), plus SUPERB's test set beside it."""
    rng = np.random.default_rng(0)
    taken: set[str] = set()
    speakers = {split: [draw_speaker_id(rng, split, taken) for _ in range(2)]
                for split in ("training", "validation", "testing")}
    root = base / "speech_commands_v0.01"
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    for split, ids in speakers.items():
        for speaker in ids:
            for word in WORDS:
                rel = f"{word}/{speaker}_nohash_0.wav"
                write_wav(root / rel)
                listed = "validation" if mislabel_validation and split == "training" else split
                if listed in lists:
                    lists[listed].append(rel)
    (root / "validation_list.txt").write_text("\n".join(lists["validation"]) + "\n")
    (root / "testing_list.txt").write_text("\n".join(lists["testing"]) + "\n")
    write_wav(root / "_background_noise_" / "white_noise.wav", 3.0)
    (root / "LICENSE").write_text("not a folder: s3prl skips it")
    for name in TEST_CLASSES:
        write_wav(base / "speech_commands_test_set_v0.01" / name / f"{name}_0a7c2a8d_nohash_0.wav")
    return root


def make_voxceleb1(base: Path, first_id: int = 10001) -> Path:
    root = base / "VoxCeleb1"
    lines = []
    for s in range(2):
        for split, utt in ((1, 1), (1, 2), (2, 3), (3, 4)):
            rel = f"id{first_id + s:05d}/vid{s}/{utt:05d}.wav"
            write_wav(root / "wav" / rel)
            lines.append(f"{split} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def regular_files(folder: Path) -> list[Path]:
    """Files under `folder` reached without following links (what preparation wrote itself)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        found += [Path(dirpath) / f for f in filenames if not (Path(dirpath) / f).is_symlink()]
    return found


def test_speech_commands_layout_links_and_configs(tmp_path: Path) -> None:
    root = make_speech_commands(tmp_path / "data")
    prepared = prepare_speech_commands(root, tmp_path / "out")
    folder = tmp_path / "out" / "speech_commands"
    train, test = folder / "train", folder / "test"
    assert sorted(p.name for p in train.iterdir()) == sorted((*WORDS, "_background_noise_"))
    assert all(p.is_symlink() and p.resolve() == (root / p.name).resolve() for p in train.iterdir())
    assert sorted(p.name for p in test.iterdir()) == sorted(TEST_CLASSES)
    assert {p.suffix for p in regular_files(tmp_path / "out")} == {".yaml", ".json"}   # no audio copied
    summary = prepared.summary
    # s3prl's own hash split: 2 training speakers x 3 words (+ the noise file), 2 validation speakers x 3 words
    assert summary["s3prl_examples"] == {"train": 7, "dev": 7, "test": 12}
    assert summary["dev_word_clips"] == {"reader": 6, "s3prl": 6} and summary["split_rule_agrees"]
    for profile, path in prepared.configs.items():
        config = yaml.safe_load(path.read_text())
        datarc = config["downstream_expert"]["datarc"]
        assert datarc["speech_commands_root"] == str(train.absolute())
        assert datarc["speech_commands_test_root"] == str(test.absolute())
        assert config["downstream_expert"]["modelrc"]["select"] == "UtteranceLevel"
    assert yaml.safe_load(prepared.configs["superb"].read_text())["runner"]["total_steps"] == 200000
    assert json.loads((folder / "prepared.json").read_text())["configs"]["superb"] == str(prepared.configs["superb"])


def test_speech_commands_rerun_repoints_links_and_reports_a_split_mismatch(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    prepare_speech_commands(make_speech_commands(tmp_path / "a"), tmp_path / "out")
    other = make_speech_commands(tmp_path / "b", mislabel_validation=True)
    assert cli(["s3prl-data", "speech_commands", "--root", str(other), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "warning: s3prl's hash-rule dev split differs from validation_list.txt" in out
    link = tmp_path / "out" / "speech_commands" / "train" / "yes"
    assert link.resolve() == (other / "yes").resolve()


def test_voxceleb1_layout(tmp_path: Path) -> None:
    root = make_voxceleb1(tmp_path / "data")
    prepared = prepare_voxceleb1(root, tmp_path / "out")
    folder = tmp_path / "out" / "voxceleb1"
    datarc = yaml.safe_load(prepared.configs["cpu_smoke"].read_text())["downstream_expert"]["datarc"]
    assert datarc["file_path"] == str((folder / "audio").absolute())
    assert datarc["meta_data"] == str((folder / "iden_split.txt").absolute())
    # what s3prl's reader does with each iden_split line: glob "<file_path>/*/wav/<path>"
    found = list(Path(datarc["file_path"]).glob("*/wav/id10002/vid1/00003.wav"))
    assert len(found) == 1 and found[0].resolve() == (root / "wav/id10002/vid1/00003.wav").resolve()
    assert prepared.summary["reader_examples"] == {"train": 4, "valid": 2, "test": 2}
    assert [p.name for p in (folder / "audio").iterdir()] == ["_root"]
    assert regular_files(tmp_path / "out") and {p.suffix for p in regular_files(tmp_path / "out")} == {".yaml", ".json"}


def test_voxceleb1_superb_layout_with_dev_and_test_folders(tmp_path: Path) -> None:
    root = make_voxceleb1(tmp_path / "data")
    prepare_voxceleb1(root, tmp_path / "out")                      # first the merged layout ...
    (root / "dev").mkdir()
    (root / "test").mkdir()
    (root / "wav").rename(root / "dev" / "wav")                    # ... then SUPERB's dev/wav + test/wav
    (root / "test" / "wav").mkdir()
    (root / "dev" / "wav" / "id10002").rename(root / "test" / "wav" / "id10002")
    prepared = prepare_voxceleb1(root, tmp_path / "out")
    audio = Path(prepared.datarc["file_path"])
    assert sorted(p.name for p in audio.iterdir()) == ["dev", "test"]   # the stale _root link is gone
    for line in (root / "iden_split.txt").read_text().split("\n")[:-1]:
        assert len(list(audio.glob("*/wav/" + line.split()[1]))) == 1


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(AsitError, match=r"iden_split.txt: speaker id\(s\) id00042, id00043 are outside id10001..id11251"):
        prepare_voxceleb1(make_voxceleb1(tmp_path / "low", first_id=42), tmp_path / "out")
    (tmp_path / "out2" / "voxceleb1").mkdir(parents=True)
    (tmp_path / "out2" / "voxceleb1" / "iden_split.txt").write_text("mine")
    with pytest.raises(AsitError, match="iden_split.txt exists and is not a link made by asit s3prl-data"):
        prepare_voxceleb1(make_voxceleb1(tmp_path / "ok"), tmp_path / "out2")
    assert (tmp_path / "out2" / "voxceleb1" / "iden_split.txt").read_text() == "mine"
    assert cli(["s3prl-data", "voxceleb1", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "asit s3prl-data: error: VoxCeleb1 identification split (iden_split.txt) not found" in capsys.readouterr().err
