"""The embedded corpus: real on-disk layouts, consistent metadata, split invariants, determinism, idempotency, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from tasks import corpus as corpus_pkg
from tasks.corpus import (CORPUS_VERSION, CorpusPaths, audioset, content_hash, esc50, generate_corpus,
                          is_up_to_date, read_manifest, speechcommands, synth, texts, voices)
from tasks.corpus.writer import ClipWriter
from upstream.cli import main
from upstream.errors import AsitError

e2e = pytest.mark.e2e
SC_NAME = re.compile(r"^([0-9a-f]{8})_nohash_(\d+)\.wav$")


# ------------------------------------------------------------------------------------------------ helpers


def wavs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.wav"))


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_format(path: Path, sample_rate: int, frames: int | None = None) -> sf._SoundFileInfo:
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 1, sample_rate), path
    if frames is not None:
        assert info.frames == frames, path
    return info


def clip_features(path: Path) -> np.ndarray:
    """Mean and std of a 40-bin log-mel spectrogram: a deliberately weak feature for learnability checks."""
    audio, rate = sf.read(str(path), dtype="float32")
    audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000)
    mel = torchaudio.compliance.kaldi.fbank(audio[None] * 32768, sample_frequency=16000, num_mel_bins=40)
    return torch.cat([mel.mean(0), mel.std(0)]).numpy()


def nearest_centroid_accuracy(train: list[tuple[np.ndarray, str]], test: list[tuple[np.ndarray, str]]) -> float:
    x = np.stack([f for f, _ in train])
    mean, std = x.mean(0), x.std(0) + 1e-6
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for f, label in train:
        groups[label].append((f - mean) / std)
    centroids = {label: np.mean(v, 0) for label, v in groups.items()}
    hits = [min(centroids, key=lambda c: np.sum(((f - mean) / std - centroids[c]) ** 2)) == label
            for f, label in test]
    return float(np.mean(hits))


def speaker_of(relpath: str) -> str:
    match = SC_NAME.match(Path(relpath).name)
    assert match, relpath
    return match.group(1)


# ------------------------------------------------------------------------------------------------ manifest


@e2e
def test_manifest_describes_what_is_on_disk(corpus: CorpusPaths) -> None:
    manifest = read_manifest(corpus.root)
    assert manifest is not None
    assert manifest["corpus_version"] == CORPUS_VERSION and manifest["seed"] == 0
    names = [n for n in CorpusPaths.__dataclass_fields__ if n != "root"]
    assert sorted(manifest["datasets"]) == sorted(names)
    for name in names:
        root = getattr(corpus, name)
        assert root == corpus.root / manifest["datasets"][name] and root.is_dir()
        assert manifest["files"][name] == sum(1 for p in root.rglob("*") if p.is_file())
        assert manifest["wav_files"][name] == len(wavs(root))
    assert manifest["total_files"] == sum(manifest["files"].values())
    assert manifest["content_sha256"] == content_hash(corpus.root)
    assert not [p for p in corpus.root.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"


@e2e
def test_corpus_paths_point_at_the_real_folder_names(corpus: CorpusPaths) -> None:
    assert corpus.esc50.name == "ESC-50-master"
    assert corpus.speechcommands_v2.name == "speech_commands_v0.02"
    assert corpus.speechcommands_v1.name == "speech_commands_v0.01"
    assert corpus.speechcommands_v1_test.name == "speech_commands_test_set_v0.01"
    assert corpus.voxceleb1.name == "VoxCeleb1"
    assert corpus.audioset.name == "audioset"
    assert corpus.unlabeled.name == "unlabeled"
    assert all(getattr(corpus, n).parent == corpus.root for n in CorpusPaths.__dataclass_fields__ if n != "root")


# ------------------------------------------------------------------------------------------------ unlabeled


@e2e
def test_unlabeled_clips(corpus: CorpusPaths) -> None:
    files = wavs(corpus.unlabeled)
    assert [p.name for p in files if p.name.startswith("speech_")] == [f"speech_{i:03d}.wav" for i in range(32)]
    assert [p.name for p in files if p.name.startswith("scene_")] == [f"scene_{i:03d}.wav" for i in range(32)]
    assert len(files) == 64
    durations = []
    for path in files:
        info = assert_format(path, 16000)
        durations.append(info.duration)
        audio, _ = sf.read(str(path), dtype="float32")
        assert np.abs(audio).max() > 0.1, f"{path.name} is (nearly) silent"
    assert min(durations) >= 2.0 and max(durations) <= 6.0
    assert np.std(durations) > 0.3, "durations should vary"
    assert len({hashlib.sha256(p.read_bytes()).digest() for p in files}) == len(files), "duplicate clips"


# ------------------------------------------------------------------------------------------------ ESC-50


ESC_NAME = re.compile(r"^([1-5])-(\d+)-([A-Z])-(\d+)\.wav$")


def esc_rows(corpus: CorpusPaths) -> list[dict[str, str]]:
    with (corpus.esc50 / "meta" / "esc50.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@e2e
def test_esc50_csv_matches_audio_folder(corpus: CorpusPaths) -> None:
    csv_path = corpus.esc50 / "meta" / "esc50.csv"
    assert csv_path.read_text().splitlines()[0] == "filename,fold,target,category,esc10,src_file,take"
    rows = esc_rows(corpus)
    assert len(rows) == 50
    assert [r["filename"] for r in rows] == sorted(r["filename"] for r in rows)
    assert {r["filename"] for r in rows} == {p.name for p in (corpus.esc50 / "audio").iterdir()}
    category_of: dict[str, str] = {}
    esc10_of: dict[str, str] = {}
    for row in rows:
        match = ESC_NAME.match(row["filename"])
        assert match, row["filename"]
        assert match.groups() == (row["fold"], row["src_file"], row["take"], row["target"])
        assert category_of.setdefault(row["target"], row["category"]) == row["category"]
        assert esc10_of.setdefault(row["category"], row["esc10"]) == row["esc10"]
        assert row["esc10"] in ("True", "False")
        assert_format(corpus.esc50 / "audio" / row["filename"], 44100, 5 * 44100)
    assert sorted(int(t) for t in category_of) == list(range(len(esc50.CATEGORIES)))
    assert len(set(category_of.values())) == len(category_of), "one category per target"
    assert set(esc10_of.values()) == {"True", "False"}
    per_fold_class = defaultdict(int)
    for row in rows:
        per_fold_class[row["fold"], row["target"]] += 1
    assert set(per_fold_class.values()) == {2} and len(per_fold_class) == 5 * len(esc50.CATEGORIES)


@e2e
def test_esc50_a_source_file_never_spans_two_folds(corpus: CorpusPaths) -> None:
    folds, takes = defaultdict(set), defaultdict(list)
    for row in esc_rows(corpus):
        folds[row["src_file"]].add(row["fold"])
        takes[row["src_file"]].append(row["take"])
    assert all(len(f) == 1 for f in folds.values()), {s: f for s, f in folds.items() if len(f) > 1}
    assert any(sorted(t) == ["A", "B"] for t in takes.values()), "no multi-take source: invariant untested"
    assert all(len(t) == len(set(t)) for t in takes.values())


@e2e
def test_esc50_classes_are_learnable_but_clips_are_not_copies(corpus: CorpusPaths) -> None:
    rows = esc_rows(corpus)
    audio = {r["filename"]: sf.read(str(corpus.esc50 / "audio" / r["filename"]), dtype="float32")[0] for r in rows}
    by_src = defaultdict(list)
    for row in rows:
        by_src[row["src_file"]].append(audio[row["filename"]])
    for clips in (c for c in by_src.values() if len(c) == 2):
        assert not np.allclose(clips[0], clips[1], atol=1e-3), "takes of a source must differ"
    data = [(clip_features(corpus.esc50 / "audio" / r["filename"]), r["target"], r["fold"]) for r in rows]
    accuracies = [nearest_centroid_accuracy([(f, y) for f, y, fold in data if fold != str(k)],
                                            [(f, y) for f, y, fold in data if fold == str(k)]) for k in range(1, 6)]
    assert np.mean(accuracies) >= 0.6, accuracies   # chance is 0.2


# ------------------------------------------------------------------------------------------------ Speech Commands


def sc_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in wavs(root) if p.parent.name != "_background_noise_")


def read_list(path: Path) -> list[str]:
    return path.read_text().splitlines()


@e2e
@pytest.mark.parametrize("version", ["speechcommands_v2", "speechcommands_v1"])
def test_speech_commands_folders_and_files(corpus: CorpusPaths, version: str) -> None:
    root: Path = getattr(corpus, version)
    words = speechcommands.V2_WORDS if version.endswith("v2") else speechcommands.V1_WORDS
    assert set(texts.COMMAND_WORDS) <= set(words) and len(words) == 14
    assert {p.name for p in root.iterdir() if p.is_dir()} == set(words) | {"_background_noise_"}
    assert {p.name for p in root.iterdir() if p.is_file()} == {"validation_list.txt", "testing_list.txt"}
    speakers_per_word = defaultdict(set)
    for rel in sc_files(root):
        word, name = rel.split("/")
        speakers_per_word[word].add(speaker_of(name))
        assert_format(root / rel, 16000, 16000)
    speakers = set.union(*speakers_per_word.values())
    assert len(speakers) == 10
    assert all(s == speakers for s in speakers_per_word.values()), "every speaker says every word"
    takes = [int(SC_NAME.match(Path(r).name).group(2)) for r in sc_files(root)]
    assert set(takes) == {0, 1}


@e2e
@pytest.mark.parametrize("version", ["speechcommands_v2", "speechcommands_v1"])
def test_speech_commands_lists_split_speakers_disjointly(corpus: CorpusPaths, version: str) -> None:
    root: Path = getattr(corpus, version)
    validation, testing = read_list(root / "validation_list.txt"), read_list(root / "testing_list.txt")
    on_disk = set(sc_files(root))
    for entries in (validation, testing):
        assert entries and len(entries) == len(set(entries))
        assert all(re.fullmatch(r"[a-z]+/[0-9a-f]{8}_nohash_\d+\.wav", e) for e in entries)
        assert set(entries) <= on_disk, set(entries) - on_disk
    split_of_file = {rel: "training" for rel in on_disk}
    split_of_file.update({rel: "validation" for rel in validation})
    split_of_file.update({rel: "testing" for rel in testing})
    assert not set(validation) & set(testing)
    speaker_splits = defaultdict(set)
    for rel, split in split_of_file.items():
        speaker_splits[speaker_of(rel)].add(split)
    assert all(len(s) == 1 for s in speaker_splits.values()), "a speaker spans two splits"
    counts = defaultdict(int)
    for splits in speaker_splits.values():
        counts[next(iter(splits))] += 1
    assert dict(counts) == {"training": 6, "validation": 2, "testing": 2}
    # lists agree with the real datasets' hash rule, so tools that recompute it (s3prl) see the same split
    assert all(speechcommands.which_set(rel) == split for rel, split in split_of_file.items())


def test_which_set_is_the_real_hash_rule() -> None:
    # independent re-implementation of the published rule on two ids
    for speaker in ("0a7c2a8d", "ffd2ba2f"):
        pct = (int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 2 ** 27) * (100.0 / (2 ** 27 - 1))
        expected = "validation" if pct < 10 else "testing" if pct < 20 else "training"
        assert speechcommands.which_set(f"yes/{speaker}_nohash_3.wav") == expected


@e2e
@pytest.mark.parametrize("version", ["speechcommands_v2", "speechcommands_v1"])
def test_speech_commands_background_noise(corpus: CorpusPaths, version: str) -> None:
    files = wavs(getattr(corpus, version) / "_background_noise_")
    assert len(files) >= 3
    for path in files:
        info = assert_format(path, 16000)
        assert info.duration >= 9.5
        audio, _ = sf.read(str(path), dtype="float32")
        assert 0.05 < np.abs(audio).max() <= 1.0


@e2e
def test_speech_commands_words_are_audible_at_varied_offsets(corpus: CorpusPaths) -> None:
    peaks = []
    for rel in sc_files(corpus.speechcommands_v2):
        audio, _ = sf.read(str(corpus.speechcommands_v2 / rel), dtype="float32")
        frame_rms = np.sqrt(np.mean(audio[: 16000 // 160 * 160].reshape(-1, 160) ** 2, axis=1))
        assert frame_rms.max() > 3 * np.median(frame_rms) or frame_rms.max() > 0.05, f"{rel}: no word above noise"
        peaks.append(int(np.argmax(frame_rms)))
    assert np.std(peaks) > 10, "words should sit at random offsets (std in 10 ms frames)"


@e2e
def test_superb_v1_test_set(corpus: CorpusPaths) -> None:
    root = corpus.speechcommands_v1_test
    assert {p.name for p in root.iterdir()} == set(texts.COMMAND_WORDS) | {"_silence_", "_unknown_"}
    for path in wavs(root):
        assert_format(path, 16000, 16000)
    for word in texts.COMMAND_WORDS:
        assert len(wavs(root / word)) == speechcommands.TEST_SET_SPEAKERS
    unknown = [p.name for p in wavs(root / "_unknown_")]
    assert unknown
    assert all(name.split("_")[0] in speechcommands.V1_WORDS and name.split("_")[0] not in texts.COMMAND_WORDS
               for name in unknown)
    test_speakers = {speaker_of(p.name) for w in texts.COMMAND_WORDS for p in wavs(root / w)}
    test_speakers |= {speaker_of(n.split("_", 1)[1]) for n in unknown}
    v1_speakers = {speaker_of(rel) for rel in sc_files(corpus.speechcommands_v1)}
    assert len(test_speakers) == speechcommands.TEST_SET_SPEAKERS and not test_speakers & v1_speakers
    silence = [sf.read(str(p), dtype="float32")[0] for p in wavs(root / "_silence_")]
    words = [sf.read(str(p), dtype="float32")[0] for p in wavs(root / "yes")]
    assert silence and max(np.abs(s).max() for s in silence) < 0.1 < min(np.abs(w).max() for w in words)


# ------------------------------------------------------------------------------------------------ VoxCeleb1


VOX_PATH = re.compile(r"^(id\d{5})/([A-Za-z0-9_-]{11})/(\d{5})\.wav$")


@e2e
def test_voxceleb1_layout_and_iden_split(corpus: CorpusPaths) -> None:
    root = corpus.voxceleb1
    lines = (root / "iden_split.txt").read_text().splitlines()
    assert all(re.fullmatch(r"[123] \S+", line) for line in lines)
    listed = [line.split(" ", 1)[1] for line in lines]
    on_disk = sorted(p.relative_to(root / "wav").as_posix() for p in wavs(root / "wav"))
    assert sorted(listed) == on_disk, "iden_split must cover every file exactly once"
    assert len(on_disk) == 8 * 3 * 3
    splits, videos = defaultdict(set), defaultdict(set)
    for line in lines:
        split, rel = line.split(" ")
        speaker, video, utt = VOX_PATH.match(rel).groups()
        splits[speaker].add(split)
        videos[speaker].add(video)
        info = assert_format(root / "wav" / rel, 16000)
        assert 2.0 <= info.duration <= 4.0, rel
    assert sorted(splits) == [f"id{10001 + i}" for i in range(8)]
    assert all(s == {"1", "2", "3"} for s in splits.values())
    assert all(len(v) == 3 for v in videos.values())
    all_videos = [v for vs in videos.values() for v in vs]
    assert len(all_videos) == len(set(all_videos)), "a video belongs to one speaker"


@e2e
def test_voxceleb1_speakers_are_identifiable(corpus: CorpusPaths) -> None:
    root = corpus.voxceleb1
    data = [(clip_features(root / "wav" / rel), rel.split("/")[0], split)
            for split, rel in (line.split(" ") for line in (root / "iden_split.txt").read_text().splitlines())]
    accuracy = nearest_centroid_accuracy([(f, s) for f, s, split in data if split == "1"],
                                         [(f, s) for f, s, split in data if split != "1"])
    assert accuracy >= 0.4, accuracy   # chance is 1/8


# ------------------------------------------------------------------------------------------------ AudioSet


AS_ROW = re.compile(r'^([A-Za-z0-9_-]{11}), (\d+\.\d{3}), (\d+\.\d{3}), "(/m/[0-9a-z_]+(?:,/m/[0-9a-z_]+)*)"$')


def audioset_rows(path: Path) -> list[tuple[str, float, float, list[str]]]:
    lines = path.read_text().splitlines()
    assert [line.startswith("# ") for line in lines[:3]] == [True] * 3, "three '# ' header lines, as the real CSVs"
    assert lines[2] == "# YTID, start_seconds, end_seconds, positive_labels"
    rows = []
    for line in lines[3:]:
        match = AS_ROW.match(line)
        assert match, line
        rows.append((match.group(1), float(match.group(2)), float(match.group(3)), match.group(4).split(",")))
    return rows


@e2e
def test_audioset_layout_is_panns(corpus: CorpusPaths) -> None:
    root = corpus.audioset
    classes = (root / "metadata" / "class_labels_indices.csv").read_text().splitlines()
    assert classes[0] == "index,mid,display_name"
    mids = [line.split(",")[1] for line in classes[1:]]
    assert [int(line.split(",")[0]) for line in classes[1:]] == list(range(len(mids))) and len(mids) == 7
    assert all(mid in {m for ms in audioset.RECIPE_LABELS.values() for m in ms} for mid in mids)
    seen_ids: set[str] = set()
    for split, stem, listed in (("train", "balanced_train_segments", 48), ("eval", "eval_segments", 24)):
        rows = audioset_rows(root / "metadata" / f"{stem}.csv")
        assert len(rows) == listed
        stored = {p.name for p in (root / "audios" / stem).iterdir()}
        present = [r for r in rows if f"Y{r[0]}.wav" in stored]
        assert len(stored) == len(present) == listed - audioset.TAKEN_DOWN[split], "taken-down rows have no clip"
        assert not seen_ids & {r[0] for r in rows}, "a video is in one split only"
        seen_ids |= {r[0] for r in rows}
        for ytid, start, end, labels in rows:
            assert end - start == audioset.CLIP_SECONDS and set(labels) <= set(mids)
            assert labels == sorted(labels, key=mids.index)
        for ytid, *_ in present:
            assert_format(root / "audios" / stem / f"Y{ytid}.wav", 32000, 3 * 32000)
        per_class = {m: sum(m in r[3] for r in present) for m in mids}
        assert min(per_class.values()) >= 3, per_class
        assert max(len(r[3]) for r in rows) > 1, "multi-label rows"


@e2e
def test_audioset_labels_are_what_is_mixed(corpus: CorpusPaths) -> None:
    """A clip labelled Engine holds more energy below 100 Hz than one without: labels follow the mixed sounds."""
    root = corpus.audioset
    rows = audioset_rows(root / "metadata" / "balanced_train_segments.csv")
    low_share = {True: [], False: []}
    for ytid, _, _, labels in rows:
        path = root / "audios" / "balanced_train_segments" / f"Y{ytid}.wav"
        if not path.is_file():
            continue
        audio, rate = sf.read(str(path), dtype="float32")
        spectrum = np.abs(np.fft.rfft(audio)) ** 2
        freqs = np.fft.rfftfreq(len(audio), 1 / rate)
        low_share["/m/02mk9" in labels].append(spectrum[freqs < 100].sum() / spectrum.sum())
    assert np.median(low_share[True]) > 3 * np.median(low_share[False])


def test_every_voice_in_the_pool_sounds_different() -> None:
    """espeak-ng silently ignores unknown variants (and any variant after some accents): each name must count."""
    seen: dict[str, str] = {}
    for name in voices.voice_names():
        audio = synth.speak("stop", synth.Voice(name, 50, 170), 16000)
        digest = hashlib.sha256(np.round(audio * 1e4).astype(np.int32).tobytes()).hexdigest()
        assert digest not in seen, f"{name} sounds exactly like {seen.get(digest)}"
        seen[digest] = name


# ------------------------------------------------------------------------------------------------ determinism


@e2e
def test_same_seed_gives_byte_identical_files_whatever_the_thread_count(corpus: CorpusPaths, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path / "again", seed=0, workers=2)
    assert file_hashes(again.root) == file_hashes(corpus.root)


@e2e
def test_another_seed_changes_the_data(corpus: CorpusPaths, tmp_path: Path) -> None:
    with ClipWriter(2) as writer:
        root = esc50.generate(tmp_path, 1, writer)["esc50"]
    assert (root / "meta" / "esc50.csv").read_text() != (corpus.esc50 / "meta" / "esc50.csv").read_text()
    seed0 = {hashlib.sha256(p.read_bytes()).digest() for p in wavs(corpus.esc50)}
    assert not seed0 & {hashlib.sha256(p.read_bytes()).digest() for p in wavs(root)}


# ------------------------------------------------------------------------------------------------ idempotency


@e2e
def test_second_call_returns_at_once(corpus: CorpusPaths) -> None:
    manifest = corpus.root / "corpus.json"
    before = manifest.stat().st_mtime_ns
    start = time.perf_counter()
    assert generate_corpus(corpus.root, seed=0) == corpus
    assert time.perf_counter() - start < 1.0
    assert manifest.stat().st_mtime_ns == before
    assert is_up_to_date(corpus.root, 0) and not is_up_to_date(corpus.root, 1)


def _fake_generators(calls: list[int]) -> tuple:
    """Instant stand-ins that produce every dataset field: they test staging/replacement without audio."""

    def fake(out_dir: Path, seed: int, writer: ClipWriter) -> dict[str, Path]:
        calls.append(seed)
        roots = {}
        for name in corpus_pkg.DATASET_FIELDS:
            (out_dir / name).mkdir()
            (out_dir / name / "seed.txt").write_text(f"{seed} {len(calls)}")
            roots[name] = out_dir / name
        return roots

    return (fake,)


def test_stale_corpus_is_replaced_and_force_regenerates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(corpus_pkg, "GENERATORS", _fake_generators(calls))
    out = tmp_path / "corpus"
    paths = generate_corpus(out, seed=0)
    assert (paths.esc50 / "seed.txt").read_text() == "0 1"
    generate_corpus(out, seed=0)
    assert calls == [0], "up-to-date corpus must not be regenerated"
    generate_corpus(out, seed=3)
    assert (paths.esc50 / "seed.txt").read_text() == "3 2" and read_manifest(out)["seed"] == 3
    generate_corpus(out, seed=3, force=True)
    assert calls == [0, 3, 3]
    manifest = json.loads((out / "corpus.json").read_text())
    manifest["corpus_version"] = CORPUS_VERSION - 1
    (out / "corpus.json").write_text(json.dumps(manifest))
    generate_corpus(out, seed=3)
    assert calls == [0, 3, 3, 3], "an older corpus version is regenerated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"], "staging/retired folders left behind"


def test_crash_leaves_no_corpus_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(out_dir: Path, seed: int, writer: ClipWriter) -> dict[str, Path]:
        (out_dir / "unlabeled").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(corpus_pkg, "GENERATORS", (broken,))
    with pytest.raises(RuntimeError, match="disk full"):
        generate_corpus(tmp_path / "corpus")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_folder_that_is_not_a_corpus(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(AsitError, match="not empty"):
        generate_corpus(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------------------ CLI


@e2e
def test_cli_corpus_command(corpus: CorpusPaths, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["corpus", str(corpus.root), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "already up to date" in out and "esc50" in out and "ESC-50-master" in out


def test_cli_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["corpus", str(tmp_path / "c"), "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
    a_file = tmp_path / "file.wav"
    a_file.write_bytes(b"")
    assert main(["corpus", str(a_file)]) == 2
    assert str(a_file) in capsys.readouterr().err


def test_cli_explains_missing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["corpus", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "espeak-ng" in err and "sox" in err and "scripts/setup.sh" in err
    assert not (tmp_path / "c").exists()


def test_cli_default_output_folder() -> None:
    import argparse

    from tasks.corpus import command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([])
    assert args.out == Path("data/corpus") and args.seed == 0 and not args.force
