"""Probe: embeddings are the shared runtime's, the cache makes a repeated probe forward-free, classifiers select
their hyper-parameter on validation data."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tasks.api import EncoderSpec, TaskCell
from tasks.corpus import CorpusPaths
from tasks.datasets import Example
from tasks.embedding_cache import EmbeddingCache, cache_key, examples_digest
from tasks.encoders import load_backbone
from tasks.probe import Embedder, ForwardCounter, candidate_layers, fit_and_predict, select, selection_splits
from tasks.recipes import load_recipe
from tasks.run import PROTOCOLS, run_task
from upstream.errors import AsitError
from upstream.runtime import RuntimeOptions, load_runtime

e2e = pytest.mark.e2e
FAST = {"num_workers": 0, "n_jobs": 1, "C": [0.1, 1.0], "max_iter": 200}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def probe_cell(encoder: Path, root: Path, fold: int, cache: Path, **overrides: object) -> TaskCell:
    return TaskCell(EncoderSpec("tiny", str(encoder)), "esc50", "probe", PROTOCOLS["esc50"], seed=0, fold=fold,
                    data_root=str(root), overrides={**FAST, "cache_dir": str(cache), **overrides})


@e2e
def test_a_second_probe_on_the_same_checkpoint_runs_no_encoder_forward(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                                       tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = run_task(probe_cell(tiny_encoder_file, corpus.esc50, 1, cache), tmp_path / "first")
    # every ESC-50 clip (5 s at 44.1 kHz -> 16 kHz -> 498 frames) is chunked at the encoder's 64 frames: 8 chunks
    assert first.extra["encoder_forwards"] == 50 * math.ceil(498 / 64)
    assert first.extra["cache_misses"] == 5 and first.extra["cache_hits"] == 0
    again = run_task(probe_cell(tiny_encoder_file, corpus.esc50, 1, cache), tmp_path / "again")
    assert again.extra["encoder_forwards"] == 0 and again.extra["encoder_forward_calls"] == 0
    assert again.extra["cache_hits"] == 5 and again.value == first.value
    other_fold = run_task(probe_cell(tiny_encoder_file, corpus.esc50, 2, cache), tmp_path / "fold2")
    assert other_fold.extra["encoder_forwards"] == 0, "folds are cached once and shared by all five cells"
    assert other_fold.extra["n_test"] == 10 and other_fold.extra["n_train"] == 40
    sidecars = sorted(cache.rglob("*.json"))
    assert len(sidecars) == 5 and not list(cache.rglob(".*"))              # atomic writes leave no temp files
    meta = json.loads(sidecars[0].read_text())
    assert meta["runtime"]["chunk_frames"] == 64 and meta["task"] == "esc50" and len(meta["checkpoint_sha256"]) == 64


@e2e
def test_cached_embeddings_are_the_runtimes_scene_embeddings(corpus: CorpusPaths, tiny_encoder_file: Path,
                                                             tmp_path: Path) -> None:
    recipe = load_recipe("esc50", "probe", overrides={**FAST, "cache_dir": str(tmp_path)})
    spec = EncoderSpec("tiny", str(tiny_encoder_file))
    examples = [Example(p, ("x",)) for p in sorted((corpus.esc50 / "audio").glob("*.wav"))[:3]]
    embedder = Embedder(load_backbone(spec), spec, recipe, 0, EmbeddingCache(tmp_path))
    got = embedder.embeddings("esc50", "fold1", examples)[2]
    assert (recipe.pooling, recipe.columns) == ("mean+std", "concat"), "the probe's defaults (docs/evidence.md)"
    runtime = load_runtime(str(tiny_encoder_file), recipe.runtime_options())
    expected = runtime([e.load(runtime.sample_rate) for e in examples]).scene(-1, "mean+std").numpy()
    assert got.shape == (3, 2 * 8 * 64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    cls = Embedder(load_backbone(spec), spec, dataclasses.replace(recipe, pooling="cls", layer=1), 0,
                   EmbeddingCache(tmp_path)).embeddings("esc50", "fold1", examples)[1]
    np.testing.assert_allclose(cls, runtime([e.load(16000) for e in examples], layers=[1]).cls[0].numpy(),
                               rtol=1e-5, atol=1e-6)


def test_cache_keys_change_with_what_changes_the_embeddings(tmp_path: Path, tone_folder: Path,
                                                            tiny_encoder_file: Path) -> None:
    clips = sorted(tone_folder.glob("*.wav"))
    copies = []
    for clip in clips[:2]:
        copies.append(tmp_path / clip.name)
        copies[-1].write_bytes(clip.read_bytes())
    examples = [Example(p, ("x",)) for p in copies]
    digest = examples_digest(examples)
    assert digest != examples_digest(examples[::-1]) and digest != examples_digest(examples[:1])
    audio, rate = sf.read(str(copies[0]))
    sf.write(str(copies[0]), audio * 0.5, rate)
    assert examples_digest(examples) != digest, "rewritten audio must not be served from the cache"
    base = {"checkpoint_sha256": "a", "runtime": {"layer": 2}, "task": "esc50", "part": "fold1", "examples": digest}
    keys = {cache_key(base), cache_key({**base, "checkpoint_sha256": "b"}), cache_key({**base, "part": "fold2"}),
            cache_key({**base, "runtime": {"layer": 1}}), cache_key({**base, "init_seed": 3})}
    assert len(keys) == 5 and cache_key(dict(reversed(list(base.items())))) == cache_key(base)
    # a scratch encoder's embeddings depend on its seed, a pretrained one's on the file's bytes only
    recipe = load_recipe("esc50", "probe", overrides={"cache_dir": str(tmp_path)})
    spec = EncoderSpec("tiny", str(tiny_encoder_file))
    ids = [Embedder(load_backbone(s, seed=seed), s, recipe, seed, EmbeddingCache()).identity(2)
           for s, seed in ((spec, 0), (spec, 1), (dataclasses.replace(spec, init="scratch"), 0),
                           (dataclasses.replace(spec, init="scratch"), 1))]
    assert ids[0] == ids[1] and ids[2] != ids[3] and ids[0] != ids[2]
    layer1 = Embedder(load_backbone(spec), spec, dataclasses.replace(recipe, layer=1), 0, EmbeddingCache())
    last = Embedder(load_backbone(spec), spec, dataclasses.replace(recipe, layer=2), 0, EmbeddingCache())
    assert layer1.layers == [1] and last.layers == [2] == candidate_layers(-1, 2), "layer -1 is layer depth"
    assert layer1.identity(1) != ids[0] and last.identity(2) == ids[0]
    assert candidate_layers("best", 2) == [0, 1, 2]
    with pytest.raises(AsitError, match=r"recipe layer -4 out of range for an encoder with 2 blocks \(0\.\.2\)"):
        Embedder(load_backbone(spec), spec, dataclasses.replace(recipe, layer=-4), 0, EmbeddingCache())


def test_cache_store_load_and_corruption(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = cache.store("ab" * 32, array, {"what": "test"})
    assert path.parent.name == "ab" and path.with_suffix(".json").is_file()
    np.testing.assert_array_equal(cache.load("ab" * 32, 4), array)
    assert cache.load("ab" * 32, 5) is None, "a different example count is a miss"
    path.write_bytes(b"not a zip")
    assert cache.load("ab" * 32, 4) is None and cache.misses == 2 and cache.hits == 1
    assert cache.load("cd" * 32, 4) is None


def test_forward_counter_counts_chunks(tiny_encoder_file: Path) -> None:
    runtime = load_runtime(str(tiny_encoder_file), RuntimeOptions(max_batch_chunks=3, padding="chunk"))
    counter = ForwardCounter(runtime.encoder)
    runtime([torch.randn(16000), torch.randn(4000)])                 # 98 frames -> 2 chunks, 23 -> 1 chunk
    assert (counter.calls, counter.chunks) == (1, 3)
    runtime([torch.randn(48000)])                                    # 298 frames -> 5 chunks in 2 batches of <= 3
    assert (counter.calls, counter.chunks) == (3, 8)
    counter.close()
    runtime([torch.randn(16000)])
    assert counter.chunks == 8


def test_selection_without_a_valid_split_cross_validates_over_folds_or_groups() -> None:
    esc = [Example(Path(f"{i}.wav"), ("a",), fold=1 + i % 4, group=f"src{i // 2}") for i in range(40)]
    splits, source = selection_splits(esc, 0, cv_folds=5)
    assert source == "4-fold cross-validation over the training folds" and len(splits) == 4
    for fit, held in splits:                   # leave one training fold out, every clip scored exactly once
        assert len({esc[i].fold for i in held}) == 1 and not {esc[i].fold for i in fit} & {esc[i].fold for i in held}
    assert sorted(np.concatenate([held for _, held in splits])) == list(range(40))
    videos = [Example(Path(f"{i}.wav"), ("a",), group=f"vid{i // 3}") for i in range(60)]
    splits, source = selection_splits(videos, 0, cv_folds=5)
    assert source == "5-fold cross-validation over the training groups" and len(splits) == 5
    for fit, held in splits:
        assert not {videos[i].group for i in fit} & {videos[i].group for i in held}
    splits, source = selection_splits(videos, 7, cv_folds=5)
    assert source == "valid split" and len(splits) == 1
    np.testing.assert_array_equal(splits[0][1], np.arange(60, 67))
    with pytest.raises(AsitError, match="the training role has 1 groups and no valid split"):
        selection_splits([Example(Path("a.wav"), ("a",), group="g")] * 4, 0, cv_folds=5)


def _blobs(n: int, seed: int, classes: int = 3, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = np.random.default_rng(99).normal(0, 3, (classes, dim))
    return centres[y] + rng.normal(0, 1, (n, dim)), y


def _examples(n: int) -> list[Example]:
    return [Example(Path(f"{i}.wav"), ("a",), group=f"g{i}") for i in range(n)]


@pytest.mark.parametrize("classifier", ["logistic", "mlp"])
def test_classifiers_select_on_valid_and_refit_on_train_and_valid(classifier: str) -> None:
    recipe = load_recipe("esc50", "probe", overrides={"classifier": classifier, "C": [1e-4, 1.0],
                                                      "mlp_epochs": 15, "n_jobs": 1})
    (xtr, ytr), (xva, yva), (xte, yte) = _blobs(90, 0), _blobs(30, 1), _blobs(60, 2)
    labelled_x, labelled_y = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
    noise = np.random.default_rng(5).normal(0, 1, labelled_x.shape)        # a useless "layer 0"
    layer, hyper, info = select({0: noise, 3: labelled_x}, labelled_y, _examples(90), 30, False, 3, recipe, 0)
    assert layer == 3 and info["selection_on"] == "valid split"
    scores = info["selection"]["3"]
    if classifier == "logistic":
        assert set(scores) == {"0.0001", "1"} and max(scores.values()) > 0.9
        assert hyper == max(recipe.C, key=lambda c: (scores[f"{c:g}"], -c)), "ties go to the smaller C"
    else:
        assert len(scores) == 15 and hyper == max(range(1, 16), key=lambda e: (scores[f"{e}"], -e))
    assert max(info["selection"]["0"].values()) < 0.7
    predicted = fit_and_predict(labelled_x, labelled_y, xte, hyper, False, 3, recipe, 0)
    assert predicted.shape == (60, 3) and (predicted.argmax(1) == yte).mean() > 0.9
    # multi-label: two labels per example from two blob sets
    ytr_m = np.eye(3)[ytr] + np.eye(3)[(ytr + 1) % 3]
    scores_m = fit_and_predict(xtr, ytr_m, xte, hyper, True, 3, recipe, 0)
    assert scores_m.shape == (60, 3) and np.all((scores_m >= 0) & (scores_m <= 1))
    top2 = np.sort(np.argsort(-scores_m, axis=1)[:, :2], axis=1)
    truth = np.sort(np.stack([yte, (yte + 1) % 3], axis=1), axis=1)
    assert (top2 == truth).all(axis=1).mean() > 0.9


def test_classes_missing_from_training_get_zero_scores() -> None:
    recipe = load_recipe("esc50", "probe", overrides={"C": [1.0]})
    x, y = _blobs(40, 0, classes=2)
    scores = fit_and_predict(x, y, x[:5], 1.0, False, 4, recipe, 0)
    assert scores.shape == (5, 4) and np.all(scores[:, 2:] == 0)
    np.testing.assert_allclose(scores.sum(1), 1.0)


def test_bad_selection_settings_are_one_line_errors_naming_the_key() -> None:
    with pytest.raises(AsitError, match="recipe cv_folds must be at least 2, got 1"):
        load_recipe("esc50", "probe", overrides={"cv_folds": 1})
    with pytest.raises(AsitError, match="recipe layer must be an integer or 'best', got 'worst'"):
        load_recipe("esc50", "probe", overrides={"layer": "worst"})
    with pytest.raises(AsitError, match=r"recipe pooling must be one of .*mean\+std"):
        load_recipe("esc50", "probe", overrides={"pooling": "median"})
