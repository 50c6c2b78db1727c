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
from tasks.probe import Embedder, ForwardCounter, fit_and_predict, selection_split
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
    got = embedder.embeddings("esc50", "fold1", examples)
    runtime = load_runtime(str(tiny_encoder_file))
    expected = runtime([e.load(runtime.sample_rate) for e in examples]).mean_pooled(-1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    cls = Embedder(load_backbone(spec), spec, dataclasses.replace(recipe, pooling="cls", layer=1), 0,
                   EmbeddingCache(tmp_path)).embeddings("esc50", "fold1", examples)
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
    ids = [Embedder(load_backbone(s, seed=seed), s, recipe, seed, EmbeddingCache()).identity
           for s, seed in ((spec, 0), (spec, 1), (dataclasses.replace(spec, init="scratch"), 0),
                           (dataclasses.replace(spec, init="scratch"), 1))]
    assert ids[0] == ids[1] and ids[2] != ids[3] and ids[0] != ids[2]
    layer1 = Embedder(load_backbone(spec), spec, dataclasses.replace(recipe, layer=1), 0, EmbeddingCache()).identity
    last = Embedder(load_backbone(spec), spec, dataclasses.replace(recipe, layer=2), 0, EmbeddingCache()).identity
    assert layer1 != ids[0] and last == ids[0], "layer -1 and layer depth are the same embeddings"
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
    runtime = load_runtime(str(tiny_encoder_file), RuntimeOptions(max_batch_chunks=3))
    counter = ForwardCounter(runtime.encoder)
    runtime([torch.randn(16000), torch.randn(4000)])                 # 98 frames -> 2 chunks, 23 -> 1 chunk
    assert (counter.calls, counter.chunks) == (1, 3)
    runtime([torch.randn(48000)])                                    # 298 frames -> 5 chunks in 2 batches of <= 3
    assert (counter.calls, counter.chunks) == (3, 8)
    counter.close()
    runtime([torch.randn(16000)])
    assert counter.chunks == 8


def test_selection_split_keeps_groups_apart() -> None:
    groups = [f"src{i // 3}" for i in range(60)]
    fit, held = selection_split(groups, 0.2, seed=0)
    assert len(fit) + len(held) == 60 and held.size > 0
    assert not {groups[i] for i in fit} & {groups[i] for i in held}


def _blobs(n: int, seed: int, classes: int = 3, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = np.random.default_rng(99).normal(0, 3, (classes, dim))
    return centres[y] + rng.normal(0, 1, (n, dim)), y


@pytest.mark.parametrize("classifier", ["logistic", "mlp"])
def test_classifiers_fit_select_and_score(classifier: str) -> None:
    recipe = load_recipe("esc50", "probe", overrides={"classifier": classifier, "C": [1e-4, 1.0],
                                                      "mlp_epochs": 15, "n_jobs": 1})
    (xtr, ytr), (xva, yva), (xte, yte) = _blobs(90, 0), _blobs(30, 1), _blobs(60, 2)
    scores, info = fit_and_predict((xtr, ytr), (xva, yva), xte, False, 3, recipe, 0, (xtr, ytr))
    assert scores.shape == (60, 3) and (scores.argmax(1) == yte).mean() > 0.9
    if classifier == "logistic":
        assert set(info["selection"]) == {"0.0001", "1.0"}
        assert info["C"] == max(recipe.C, key=lambda c: (info["selection"][str(c)], -recipe.C.index(c)))
    else:
        assert 1 <= info["epochs"] <= 15 and len(info["selection"]) == 15
    # multi-label: two labels per example from two blob sets
    ytr_m = np.eye(3)[ytr] + np.eye(3)[(ytr + 1) % 3]
    scores, _ = fit_and_predict((xtr, ytr_m), None, xte, True, 3, recipe, 0, (xtr, ytr_m))
    assert scores.shape == (60, 3) and np.all((scores >= 0) & (scores <= 1))
    top2 = np.sort(np.argsort(-scores, axis=1)[:, :2], axis=1)
    truth = np.sort(np.stack([yte, (yte + 1) % 3], axis=1), axis=1)
    assert (top2 == truth).all(axis=1).mean() > 0.9


def test_classes_missing_from_training_get_zero_scores() -> None:
    recipe = load_recipe("esc50", "probe", overrides={"C": [1.0]})
    x, y = _blobs(40, 0, classes=2)
    scores, _ = fit_and_predict((x, y), None, x[:5], False, 4, recipe, 0, (x, y))
    assert scores.shape == (5, 4) and np.all(scores[:, 2:] == 0)
    np.testing.assert_allclose(scores.sum(1), 1.0)
