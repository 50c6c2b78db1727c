"""Data fingerprints: the digest changes when a clip is removed, edited, relabelled or moved between splits, and not
when files are only touched or the dataset is moved; content hashes are cached so an unchanged dataset is read once."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import upstream.fingerprint as fp
from tasks.fingerprint import data_fingerprint, task_entries
from tasks.task_data import TaskData, load_task_data
from upstream.checkpoint import load_encoder
from upstream.errors import AsitError
from upstream.fingerprint import ContentHashCache, FingerprintEntry, default_cache_dir, fingerprint_entries
from upstream.hashing import _sha256_of
from upstream.pretrain import load_pretrain_config, run_pretraining
from upstream.pretrain_data import DataConfig, clips_fingerprint, list_clips

from conftest import TINY_PRETRAIN_OVERRIDES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HOUR_NS = 3600 * 10**9


def age(tree: Path) -> None:
    """Date every file an hour back: files modified within fp.RACY_NS of being hashed are not trusted later."""
    past = time.time_ns() - HOUR_NS
    for path in tree.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(past, past))


def copy_dataset(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / source.name
    shutil.copytree(source, root)
    age(root)
    return root


def hashed_by_fresh_cache(data: TaskData, cache_dir: Path) -> tuple[str, int]:
    """(digest, files hashed) through a cache opened from disk, with upstream.hashing's in-process memo cleared,
    so the count is what a new process would read."""
    _sha256_of.cache_clear()
    cache = ContentHashCache(data.index.root, cache_dir)
    digest = fingerprint_entries(task_entries(data), data.index.root, content=True, cache=cache)
    return digest, cache.hashed


def esc50_rows(root: Path) -> list[dict[str, str]]:
    with (root / "meta" / "esc50.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_esc50_rows(root: Path, rows: list[dict[str, str]]) -> None:
    with (root / "meta" / "esc50.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_second_fingerprint_reads_no_audio_and_touch_rehashes_one_file(corpus, tmp_path: Path) -> None:
    root = copy_dataset(corpus.esc50, tmp_path)
    cache_dir = tmp_path / "cache"
    data = load_task_data("esc50", root, fold=1)
    first = data_fingerprint(data, cache_dir)
    assert first == {"digest": first["digest"], "clips": {"train": 40, "test": 10}, "files": 50, "missing": 0,
                     "root": str(root), "content": "sha256 of audio bytes"}
    assert len(first["digest"]) == 16 and int(first["digest"], 16) >= 0
    assert json.loads(json.dumps(first)) == first
    cache_file = ContentHashCache(root, cache_dir).path
    assert cache_file.parent == cache_dir / "fingerprints" and len(json.loads(cache_file.read_text())) == 50

    assert hashed_by_fresh_cache(data, cache_dir) == (first["digest"], 0)

    clip = data.test[0].path
    os.utime(clip)                                           # touched: newer mtime, same bytes
    assert hashed_by_fresh_cache(data, cache_dir) == (first["digest"], 1)
    assert data_fingerprint(data, cache_dir) == first


def test_recently_modified_files_are_hashed_again_until_they_are_older(corpus, tmp_path: Path) -> None:
    root = tmp_path / "esc50"
    shutil.copytree(corpus.esc50, root)
    now = time.time_ns()
    for path in (root / "audio").iterdir():
        os.utime(path, ns=(now, now))                        # as if written in this timestamp tick
    data = load_task_data("esc50", root, fold=1)
    digest, hashed = hashed_by_fresh_cache(data, tmp_path / "cache")
    assert hashed == 50
    assert hashed_by_fresh_cache(data, tmp_path / "cache") == (digest, 50)     # racy entries are not trusted
    age(root)
    assert hashed_by_fresh_cache(data, tmp_path / "cache") == (digest, 50)
    assert hashed_by_fresh_cache(data, tmp_path / "cache") == (digest, 0)


def test_removing_editing_or_relabelling_a_clip_changes_the_digest(corpus, tmp_path: Path) -> None:
    root = copy_dataset(corpus.esc50, tmp_path)
    cache_dir = tmp_path / "cache"
    before = data_fingerprint(load_task_data("esc50", root, fold=1), cache_dir)

    moved = tmp_path / "elsewhere" / "ESC-50"                # the same files at another place: the same data
    shutil.copytree(root, moved)
    at_new_place = data_fingerprint(load_task_data("esc50", moved, fold=1), cache_dir)
    assert at_new_place["digest"] == before["digest"] and at_new_place["root"] != before["root"]

    # one clip's samples edited, length and format kept: same size, new bytes
    rows = esc50_rows(root)
    edited = root / "audio" / rows[0]["filename"]
    wave, rate = sf.read(edited, dtype="int16")
    info = sf.info(edited)
    size = edited.stat().st_size
    sf.write(edited, np.ascontiguousarray(wave[::-1]), rate, subtype=info.subtype)
    assert edited.stat().st_size == size
    after_edit = data_fingerprint(load_task_data("esc50", root, fold=1), cache_dir)
    assert after_edit["digest"] != before["digest"] and after_edit["clips"] == before["clips"]

    # a class renamed in the metadata: the same files, other labels
    target = rows[1]["target"]
    renamed = [dict(row, category="renamed") if row["target"] == target else row for row in rows]
    write_esc50_rows(root, renamed)
    relabelled = data_fingerprint(load_task_data("esc50", root, fold=1), cache_dir)
    assert relabelled["digest"] not in (before["digest"], after_edit["digest"])

    # one clip removed (its row and its file)
    gone = rows[2]
    write_esc50_rows(root, [row for row in renamed if row is not gone])
    (root / "audio" / gone["filename"]).unlink()
    removed = data_fingerprint(load_task_data("esc50", root, fold=int(gone["fold"])), cache_dir)
    assert removed["digest"] not in (before["digest"], after_edit["digest"], relabelled["digest"])
    assert removed["files"] == 49 and removed["clips"] == {"train": 40, "test": 9}


def test_the_five_esc50_folds_of_one_dataset_share_one_digest(corpus, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cells = [data_fingerprint(load_task_data("esc50", corpus.esc50, fold=fold), cache_dir) for fold in range(1, 6)]
    assert len({cell["digest"] for cell in cells}) == 1
    assert sum(cell["clips"]["test"] for cell in cells) == 50
    assert all(cell["clips"]["train"] + cell["clips"]["test"] == 50 for cell in cells)


def test_voxceleb1_moving_an_utterance_between_splits_changes_the_digest(corpus, tmp_path: Path) -> None:
    root = copy_dataset(corpus.voxceleb1, tmp_path)
    cache_dir = tmp_path / "cache"
    before = data_fingerprint(load_task_data("voxceleb1", root), cache_dir)
    assert before["clips"] == {"train": 40, "valid": 16, "test": 16} and before["files"] == 72
    assert hashed_by_fresh_cache(load_task_data("voxceleb1", root), cache_dir) == (before["digest"], 0)

    split_file = root / "iden_split.txt"
    lines = split_file.read_text().splitlines()
    first_train = next(i for i, line in enumerate(lines) if line.startswith("1 "))
    lines[first_train] = "3" + lines[first_train][1:]
    split_file.write_text("\n".join(lines) + "\n")
    after = data_fingerprint(load_task_data("voxceleb1", root), cache_dir)
    assert after["digest"] != before["digest"]
    assert after["clips"] == {"train": 39, "valid": 16, "test": 17} and after["files"] == 72


def test_audioset_counts_the_clips_the_reader_dropped(corpus, tmp_path: Path) -> None:
    root = copy_dataset(corpus.audioset, tmp_path)
    data = load_task_data("as20k", root)
    report = data.index.report
    before = data_fingerprint(data, tmp_path / "cache")
    assert before["missing"] == sum(report["missing"].values()) == 4          # taken down: never stored
    assert before["clips"] == {"train": 45, "test": 23}

    emptied = data.train[0].path
    emptied.write_bytes(b"")                                 # a failed download: 0 bytes, left out by the reader
    after = data_fingerprint(load_task_data("as20k", root), tmp_path / "cache")
    assert after["missing"] == 5 and after["clips"] == {"train": 44, "test": 23}
    assert after["digest"] != before["digest"]


def test_a_corrupt_or_unwritable_cache_is_recomputed_never_an_error(corpus, tmp_path: Path, capsys) -> None:
    root = copy_dataset(corpus.esc50, tmp_path)
    cache_dir = tmp_path / "cache"
    data = load_task_data("esc50", root, fold=2)
    digest = data_fingerprint(data, cache_dir)["digest"]
    cache_file = ContentHashCache(root, cache_dir).path

    records = json.loads(cache_file.read_text())
    spoiled = sorted(records)[:2]
    records[spoiled[0]] = [1, 2, "not a sha256"]             # malformed records: recomputed, the rest kept
    records[spoiled[1]] = "junk"
    cache_file.write_text(json.dumps(records))
    assert hashed_by_fresh_cache(data, cache_dir) == (digest, 2)

    cache_file.write_text("{ truncated")                     # not JSON at all: every file recomputed
    assert hashed_by_fresh_cache(data, cache_dir) == (digest, 50)
    assert len(json.loads(cache_file.read_text())) == 50     # and the file is whole again

    blocked = tmp_path / "a-file"
    blocked.write_text("")                                   # the cache folder cannot be created
    assert data_fingerprint(data, blocked)["digest"] == digest
    assert "data fingerprint cache not saved" in capsys.readouterr().err


def test_entries_digest_is_order_free_and_covers_every_field(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"RIFF-a")
    b.write_bytes(b"RIFF-bb")
    entries = [FingerprintEntry.of(a, labels=["dog"], split="train"), FingerprintEntry.of(b, labels=["cat"])]

    def digest(items: list[FingerprintEntry], content: bool = True) -> str:
        return fingerprint_entries(items, tmp_path, content=content, cache_dir=tmp_path / "cache")

    base = digest(entries)
    assert digest(entries[::-1]) == base
    assert digest([FingerprintEntry.of(a, labels=["cat"], split="train"), entries[1]]) != base
    assert digest([FingerprintEntry.of(a, labels=["dog"], split="test"), entries[1]]) != base
    assert digest([FingerprintEntry.of(a, labels=["dog"], split="train", start_s=1.0), entries[1]]) != base
    assert digest(entries + entries[:1]) != base                  # a clip listed twice is another list
    names_only = digest(entries, content=False)
    assert names_only != base
    a.write_bytes(b"RIFF-x")                                      # same size, other bytes
    assert digest(entries, content=False) == names_only           # names and sizes cannot see it
    os.utime(a, ns=(1, 1))
    assert digest(entries) != base
    with pytest.raises(AsitError, match=r"cannot fingerprint audio file .*gone.wav"):
        digest([FingerprintEntry.of(tmp_path / "gone.wav")])


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASIT_CACHE_DIR", str(tmp_path / "asit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "asit"
    monkeypatch.delenv("ASIT_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "asit-hear"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "asit-hear"


def test_pretraining_fingerprint_uses_names_and_sizes_only(tone_folder, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "tones"
    shutil.copytree(tone_folder, folder)
    monkeypatch.setattr(fp, "file_sha256", lambda path: pytest.fail(f"{path} was read"))
    config = DataConfig(source=str(folder))
    first = clips_fingerprint(list_clips(config), config.source)
    assert first == {"source": str(folder), "clips": 8, "digest": first["digest"], "content": "names and sizes only"}

    os.utime(folder / "clip000.wav")
    assert clips_fingerprint(list_clips(config), config.source) == first
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    assert clips_fingerprint(list_clips(DataConfig(source=str(moved))), str(moved))["digest"] == first["digest"]

    (folder / "clip003.wav").unlink()
    fewer = clips_fingerprint(list_clips(config), config.source)
    assert fewer["clips"] == 7 and fewer["digest"] != first["digest"]


def test_exported_encoder_records_its_pretraining_data(tone_folder, tmp_path: Path) -> None:
    config = load_pretrain_config("demo_tiny", TINY_PRETRAIN_OVERRIDES + [
        f"data.source={tone_folder}", f"run_dir={tmp_path / 'run'}", "trainer.max_epochs=1", "trainer.max_steps=1"])
    run = run_pretraining(config)
    meta = load_encoder(run / "encoder.pt").meta
    assert meta["data"] == clips_fingerprint(list_clips(DataConfig(source=str(tone_folder))), str(tone_folder))
    assert meta["data"]["clips"] == 8 and meta["data"]["content"] == "names and sizes only"
