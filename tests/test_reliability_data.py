"""Reliability of input data, non-finite values and encoder identity: NaN embeddings stop the probe naming the clip,
0-sample wavs are refused (or, for AudioSet, dropped and counted) naming the file, channels-last stereo is refused
by the HEAR API, and an encoder is identified by its weights + config rather than its file's bytes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asit_hear import AudioInputError, check_audio, get_scene_embeddings, get_timestamp_embeddings, load_model
from benchmarks.hear_results import ingest_hear_scores
from benchmarks.results import ResultsStore, cell_key, checkpoint_identity, file_sha256, make_row
from tasks.api import EncoderSpec, TaskCell, TaskResult
from tasks.datasets import Example, read_audioset, read_esc50, read_speechcommands, read_voxceleb1
from tasks.embedding_cache import EmbeddingCache
from tasks.run import PROTOCOLS, run_task
from upstream.checkpoint import load_encoder, save_encoder
from upstream.cli import main as cli_main
from upstream.errors import AsitError
from upstream.identity import encoder_identity
from upstream.runtime import EncoderRuntime

from conftest import TINY_PRETRAIN_OVERRIDES, write_scored_hear_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SR = 16000
FAST = {"num_workers": 0, "n_jobs": 1, "C": [1.0], "max_iter": 100, "layer": -1}


def tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(SR * seconds)
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) + 0.03 * rng.standard_normal(n)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, SR, subtype=subtype)
    return path


def tiny_esc50(root: Path, empty: str | None = None) -> Path:
    """ESC-50 layout: 2 classes x 5 folds x 1 clip (0.3-0.5 s, distinct lengths); `empty`: a file written with 0
    samples."""
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category in enumerate(("dog", "rain")):
            src = f"{100 + 10 * fold + target}"
            name = f"{fold}-{src}-A-{target}.wav"
            samples = np.zeros(0, np.float32) if name == empty else tone(0.3 + 0.02 * (2 * fold + target), fold * 7
                                                                          + target)
            write_wav(root / "audio" / name, samples)
            rows.append(f"{name},{fold},{target},{category},False,{src},A")
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def esc_cell(encoder: Path, root: Path, cache: Path, init: str = "pretrained") -> TaskCell:
    return TaskCell(EncoderSpec("tiny", str(encoder), init), "esc50", "probe", PROTOCOLS["esc50"], seed=0, fold=1,
                    data_root=str(root), overrides={**FAST, "cache_dir": str(cache)})


# ------------------------------------------------------------------------------------------ 1. NaN embeddings

def test_a_nan_embedding_stops_the_probe_naming_the_clip_and_layer(tmp_path: Path, tiny_encoder_file: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tiny_esc50(tmp_path / "ESC-50-master")
    poisoned = root / "audio" / "3-131-A-1.wav"
    poisoned_samples = sf.info(str(poisoned)).frames
    original = EncoderRuntime.forward

    def forward(self, waves, layers=None):  # type: ignore[no-untyped-def]
        out = original(self, waves, layers)
        for row, wave in enumerate(waves):
            if int(wave.shape[-1]) == poisoned_samples:         # the clip (lengths are distinct, 16 kHz files)
                for states in out.hidden_states:
                    states[row] = float("nan")
        return out

    monkeypatch.setattr(EncoderRuntime, "forward", forward)
    cache = tmp_path / "cache"
    with pytest.raises(AsitError, match=r"the layer 2 embedding of \S*3-131-A-1\.wav holds NaN or Inf") as err:
        run_task(esc_cell(tiny_encoder_file, root, cache), tmp_path / "run")
    assert "\n" not in str(err.value) and "is not cached" in str(err.value)
    stored = sorted(cache.rglob("*.npz"))
    assert stored, "parts embedded before the poisoned one are cached"
    for path in stored:                                          # … and no cached entry holds the NaN
        with np.load(path) as data:
            assert np.isfinite(data["embeddings"]).all()
    assert not any("fold3" in p.read_text() for p in cache.rglob("*.json"))


def test_a_cached_entry_holding_nan_is_treated_as_absent(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.store("ab" * 32, np.array([[1.0, np.nan], [0.0, 1.0]], np.float32), {"task": "t"})
    cache.store("cd" * 32, np.array([[1.0, 2.0], [0.0, 1.0]], np.float32), {"task": "t"})
    assert cache.load("ab" * 32, 2) is None
    np.testing.assert_array_equal(cache.load("cd" * 32, 2), [[1.0, 2.0], [0.0, 1.0]])
    assert (cache.hits, cache.misses) == (1, 1)


# -------------------------------------------------------------------------------------- 2. 0-sample wavs

def test_esc50_refuses_a_0_sample_clip_naming_it(tmp_path: Path) -> None:
    root = tiny_esc50(tmp_path / "ESC-50-master", empty="2-120-A-0.wav")
    with pytest.raises(AsitError, match=r"1 audio file\(s\) listed in \S*esc50\.csv hold no samples .*"
                                        r"audio/2-120-A-0\.wav") as err:
        read_esc50(root)
    assert "\n" not in str(err.value)


def _speechcommands(root: Path, empty: str | None = None, empty_noise: bool = False) -> Path:
    words = ("yes", "no", "cat")
    for w, word in enumerate(words):
        for s in range(3):
            name = f"{word}/spk{s}{w}_nohash_0.wav"
            write_wav(root / name, np.zeros(0, np.float32) if name == empty else tone(0.4, 10 * w + s))
    (root / "validation_list.txt").write_text("yes/spk10_nohash_0.wav\nno/spk11_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/spk20_nohash_0.wav\ncat/spk22_nohash_0.wav\n")
    write_wav(root / "_background_noise_" / "white.wav",
              np.zeros(0, np.float32) if empty_noise else tone(3.0, 99))
    return root


def test_speechcommands_refuses_0_sample_word_noise_and_test_files(tmp_path: Path) -> None:
    ok = _speechcommands(tmp_path / "ok")
    assert len(read_speechcommands(ok, "v2").examples) == 9
    root = _speechcommands(tmp_path / "v2", empty="no/spk01_nohash_0.wav")     # in no split list: "train"
    with pytest.raises(AsitError, match=r"hold no samples .*no/spk01_nohash_0\.wav"):
        read_speechcommands(root, "v2")
    listed = _speechcommands(tmp_path / "listed", empty="no/spk11_nohash_0.wav")   # in validation_list.txt
    with pytest.raises(AsitError, match=r"hold no samples .*no/spk11_nohash_0\.wav"):
        read_speechcommands(listed, "v2")
    noise = _speechcommands(tmp_path / "noise" / "speech_commands_v0.01", empty_noise=True)
    with pytest.raises(AsitError, match=r"background noise file \S*white\.wav holds no samples"):
        read_speechcommands(noise, "v1", test_root=ok)
    v1 = _speechcommands(tmp_path / "v1" / "speech_commands_v0.01")
    test_set = tmp_path / "v1" / "speech_commands_test_set_v0.01"
    write_wav(test_set / "yes" / "t0_nohash_0.wav", tone(0.4, 5))
    write_wav(test_set / "_silence_" / "t1_nohash_0.wav", np.zeros(0, np.float32))
    with pytest.raises(AsitError, match=r"hold no samples .*_silence_/t1_nohash_0\.wav"):
        read_speechcommands(v1, "v1")


def test_voxceleb1_refuses_a_0_sample_utterance_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "vox1"
    lines = []
    for s, speaker in enumerate(("id10001", "id10002")):
        for u in range(3):
            rel = f"{speaker}/vid{u}/0000{u}.wav"
            empty = (speaker, u) == ("id10002", 2)
            write_wav(root / "wav" / rel, np.zeros(0, np.float32) if empty else tone(0.4, 3 * s + u))
            lines.append(f"{u + 1} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(AsitError, match=r"1 audio file\(s\) listed in \S*iden_split\.txt hold no samples .*"
                                        r"id10002/vid2/00002\.wav"):
        read_voxceleb1(root)


def _audioset(root: Path) -> Path:
    mids = ("/m/dog", "/m/cat")
    (root / "class_labels_indices.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "class_labels_indices.csv").write_text("index,mid,display_name\n0,/m/dog,Dog\n1,/m/cat,Cat\n")
    ids = {"train": ["aaaaaaaaaa0", "aaaaaaaaaa1", "aaaaaaaaaa2"], "test": ["bbbbbbbbbb0", "bbbbbbbbbb1"]}
    for split, name in (("train", "balanced_train_segments"), ("test", "eval_segments")):
        rows = ["# Segments csv", "# YTID, start_seconds, end_seconds, positive_labels"]
        rows += [f'{ytid}, 0.000, 10.000, "{mids[i % 2]}"' for i, ytid in enumerate(ids[split])]
        (root / f"{name}.csv").write_text("\n".join(rows) + "\n")
        for i, ytid in enumerate(ids[split]):
            empty = ytid == "aaaaaaaaaa1"
            write_wav(root / "audios" / split / f"Y{ytid}.wav", np.zeros(0, np.float32) if empty else tone(0.3, i))
    return root


def test_audioset_drops_and_counts_0_sample_clips_or_refuses_them(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = _audioset(tmp_path / "audioset")
    index = read_audioset(root)
    assert sorted(e.group for e in index.split("train")) == ["aaaaaaaaaa0", "aaaaaaaaaa2"]
    assert index.report["empty"] == {"train": 1, "test": 0}
    assert index.report["found"] == {"train": 2, "test": 2} and index.report["missing"] == {"train": 0, "test": 0}
    assert index.report["empty_examples"][0].endswith("Yaaaaaaaaaa1.wav")
    printed = capsys.readouterr().err
    assert "left out 1 stored clip(s) holding no samples (train 1, test 0; missing=drop)" in printed
    assert "Yaaaaaaaaaa1.wav" in printed
    with pytest.raises(AsitError, match=r"1 AudioSet clip\(s\) stored hold no samples \(train: 1, test: 0\), "
                                        r"e\.g\. \S*Yaaaaaaaaaa1\.wav; re-download them"):
        read_audioset(root, missing="error")


def test_example_load_refuses_empty_files_segments_past_the_end_and_nan_samples(tmp_path: Path) -> None:
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(AsitError, match=r"audio file \S*empty\.wav holds no samples"):
        Example(empty, ("x",)).load(SR)
    short = write_wav(tmp_path / "short.wav", tone(1.0, 0))
    assert Example(short, ("x",), start_s=0.5, duration_s=0.25).load(SR).shape == (4000,)
    with pytest.raises(AsitError, match=r"audio file \S*short\.wav has no samples in the segment starting at 2 s "
                                        r"\(the file lasts 1 s\)"):
        Example(short, ("x",), start_s=2.0, duration_s=1.0).load(SR)
    samples = tone(0.2, 1)
    samples[100] = np.nan
    broken = write_wav(tmp_path / "nan.wav", samples, subtype="FLOAT")
    with pytest.raises(AsitError, match=r"audio file \S*nan\.wav holds NaN or infinite samples"):
        Example(broken, ("x",)).load(SR)


# ------------------------------------------------------------------------------------ 3. channels-last stereo

def test_hear_refuses_channels_last_stereo(tiny_encoder_file: Path) -> None:
    model = load_model(str(tiny_encoder_file))
    stereo = torch.from_numpy(np.stack([tone(0.004, 0), tone(0.004, 1)], axis=1))      # [64 samples, 2 channels]
    assert tuple(stereo.shape) == (64, 2)
    for call in (get_scene_embeddings, get_timestamp_embeddings):
        with pytest.raises(AudioInputError, match=r"audio has shape \(64, 2\): that looks like channels-last audio "
                                                  r"\[n_samples, channels\]; HEAR takes mono audio "
                                                  r"\[n_sounds, n_samples\]"):
            call(stereo, model)
    with pytest.raises(AudioInputError, match="channels-last"):
        check_audio(torch.zeros(48000, 2))
    with pytest.raises(AudioInputError, match="channels-last"):
        check_audio(torch.zeros(9, 8))                           # 7.1 surround: the rule's upper bound
    # the rule's edges: as many sounds as samples, or more than 8 samples, are taken as [n_sounds, n_samples]
    for shape in ((2, 2), (1, 2), (8, 8), (64, 9)):
        assert check_audio(torch.zeros(shape)).shape == shape
    mono = stereo.mean(dim=1)[None]
    assert get_scene_embeddings(mono, model).shape == (1, model.scene_embedding_size)


# ---------------------------------------------------------------------------- 4. identity by weights + config

def lightning_checkpoint(path: Path, seed: int = 0) -> Path:
    """A Lightning pretraining checkpoint of the tiny ASiT (teacher + student, optimizer state), as `asit pretrain`
    writes `last.ckpt`, without training."""
    from upstream.encoders import build_encoder
    from upstream.pretrain_config import load_pretrain_config

    config = load_pretrain_config("demo_tiny", TINY_PRETRAIN_OVERRIDES + [f"data.source={path.parent}"])
    torch.manual_seed(seed)
    teacher, student = build_encoder(config.encoder), build_encoder(config.encoder)
    state = {**{f"objective.teacher.{k}": v for k, v in teacher.state_dict().items()},
             **{f"objective.student.{k}": v for k, v in student.state_dict().items()},
             "objective.head.weight": torch.randn(4, 4)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"pytorch-lightning_version": "2.5.0", "epoch": 3, "global_step": 12, "state_dict": state,
                "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(8)}}}],
                "hyper_parameters": {"config": dataclasses.asdict(config)}}, path)
    return path


def test_an_export_and_its_lightning_checkpoint_are_one_encoder(tmp_path: Path) -> None:
    ckpt = lightning_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    export, again = tmp_path / "run" / "encoder.pt", tmp_path / "re-exported.pt"
    assert cli_main(["export", str(ckpt), str(export)]) == 0
    assert cli_main(["export", str(export), str(again)]) == 0
    files = {file_sha256(p) for p in (ckpt, export, again)}
    assert len(files) == 3, "three containers, three byte hashes"
    identity = encoder_identity(ckpt)
    assert len(identity) == 64 and encoder_identity(export) == encoder_identity(again) == identity
    assert checkpoint_identity(export) == checkpoint_identity(ckpt) == identity
    assert encoder_identity(ckpt, which="student") != identity

    # one weight, or the frontend statistics, changed: another encoder
    loaded = load_encoder(export)
    with torch.no_grad():
        loaded.encoder.state_dict()["blocks.1.mlp.fc2.bias"][3] += 1e-3     # state-dict tensors share the weights
    assert encoder_identity(save_encoder(tmp_path / "nudged.pt", loaded.encoder, loaded.frontend)) != identity
    loaded = load_encoder(export)
    other_stats = dataclasses.replace(loaded.frontend, stats="custom", mean=-5.0, std=4.0)
    assert encoder_identity(save_encoder(tmp_path / "stats.pt", loaded.encoder, other_stats)) != identity

    # results: one cell key and one checkpoint_sha256 for both files, the file bytes kept apart
    cells = [TaskCell(EncoderSpec("asit", str(p)), "esc50", "probe", PROTOCOLS["esc50"], seed=0, fold=1)
             for p in (ckpt, export)]
    keys = {cell_key(c, checkpoint_identity(c.encoder.path), "r") for c in cells}
    assert len(keys) == 1
    rows = [make_row(c, cell_key(c, identity, "r"), identity, result=TaskResult("accuracy", 0.5)) for c in cells]
    assert {r["checkpoint_sha256"] for r in rows} == {identity}
    assert [r["checkpoint_file_sha256"] for r in rows] == [file_sha256(ckpt), file_sha256(export)]
    # floors stay apart per init and seed, as before
    floors = {cell_key(dataclasses.replace(cells[0], encoder=EncoderSpec("asit", str(ckpt), init), seed=seed),
                       identity, "r") for init in ("pretrained", "scratch") for seed in (0, 1)}
    assert len(floors) == 4
    # a placeholder that is no encoder is keyed by its bytes, as every file was before
    placeholder = tmp_path / "placeholder.pt"
    placeholder.write_bytes(b"weights")
    assert checkpoint_identity(placeholder) == file_sha256(placeholder)
    with pytest.raises(AsitError, match=r"missing\.pt does not exist"):
        checkpoint_identity(tmp_path / "missing.pt")


def test_the_probe_cache_and_hear_rows_follow_the_weights_not_the_file(tmp_path: Path) -> None:
    ckpt = lightning_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    export = tmp_path / "run" / "encoder.pt"
    assert cli_main(["export", str(ckpt), str(export)]) == 0
    root = tiny_esc50(tmp_path / "ESC-50-master")
    cache = tmp_path / "cache"
    first = run_task(esc_cell(ckpt, root, cache), tmp_path / "first")
    assert first.extra["cache_misses"] == 5 and first.extra["encoder_forwards"] > 0
    second = run_task(esc_cell(export, root, cache), tmp_path / "second")
    assert second.extra["cache_hits"] == 5 and second.extra["encoder_forwards"] == 0
    assert second.value == first.value
    scratch = run_task(esc_cell(export, root, cache, init="scratch"), tmp_path / "scratch")
    assert scratch.extra["cache_misses"] == 5, "the random-init floor is another encoder"

    # heareval scores ingested once per encoder, whichever of its files is named
    write_scored_hear_task(tmp_path / "embeddings" / "asit_hear" / "esc50")
    store = ResultsStore(tmp_path / "r.jsonl")
    assert ingest_hear_scores(tmp_path / "embeddings", EncoderSpec("asit", str(ckpt)), store) == (5, 0)
    assert ingest_hear_scores(tmp_path / "embeddings", EncoderSpec("asit", str(export)), store) == (0, 5)
    assert {r["checkpoint_sha256"] for r in store.rows()} == {encoder_identity(export)}


def test_encoder_identity_is_memoised_per_file_version(tmp_path: Path, tiny_encoder_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import upstream.checkpoint

    path = tmp_path / "enc.pt"
    path.write_bytes(tiny_encoder_file.read_bytes())
    loads = []
    real = upstream.checkpoint.load_encoder
    monkeypatch.setattr(upstream.checkpoint, "load_encoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    first = encoder_identity(path)
    assert encoder_identity(path) == first and len(loads) == 1
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert encoder_identity(path) == first and len(loads) == 2, "a touched file is loaded again"
    with pytest.raises(AsitError, match=r"checkpoint \S*nope\.pt does not exist"):
        encoder_identity(tmp_path / "nope.pt")
