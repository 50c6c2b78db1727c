"""Linear, MLP, kNN and few-shot probes on frozen scene embeddings from the shared encoder runtime, cached.

Embeddings. `upstream.runtime.EncoderRuntime` (the runtime HEAR and s3prl use) turns each whole clip into one vector
per encoder step of a layer (`columns`); the scene embedding is the runtime's pooling of them (`pooling`: mean, max,
mean+max, mean+std, or the CLS token of encoders that have one). `layer: best` embeds every layer (one encoder pass)
and lets the selection below pick one. The frontend is the checkpoint's own (the statistics the encoder was
pretrained with): a frozen encoder has never seen inputs normalised otherwise, so the probe measures the
representation, not a mismatch (finetuning, which adapts the encoder, uses the task statistics of Table I instead).
Embeddings are cached per part (split or ESC-50 fold) and layer — see tasks/embedding_cache.py; the encoder is
identified by its weights + config (upstream.identity), so an export of a run's `last.ckpt` shares the run's own
`encoder.pt` entries — and encoder forwards are counted by a hook on the encoder's stem, so a repeated probe can prove
it ran none. Every computed embedding is checked to be finite before it is cached or reaches scikit-learn: a clip whose
embedding holds NaN or Inf stops the probe with an AsitError naming the clip's file and the layer.

Classifier. `logistic`: scikit-learn LogisticRegression on standardised embeddings (one-vs-rest for multi-label);
`mlp`: one hidden layer (ReLU, dropout) trained with Adam; `knn`: cosine k-nearest neighbours on standardised
embeddings, a class's score being the share of the k neighbours carrying it (so mAP is defined for multi-label
tasks). Selection: the layer and C (or the number of MLP epochs, or k) with the best mean score on the valid split,
or, for tasks without one (AS-20K, ESC-50), in grouped K-fold cross-validation over the training role (ESC-50: its
training folds; AudioSet: videos). The chosen classifier is then refit on every labelled clip (train + valid), as the
protocol's final model. The row keeps the whole grid (`selection`: layer -> point -> mean selection score) and the
point used (`selected`).

Few-shot (`shots` = k > 0): each of `draws` seeded draws keeps k labelled clips per class (`few_shot_rows`), fits the
classifier at a fixed point (the recipe's first C or k, or `mlp_epochs`: nothing is held out to select on) and scores
the whole test split; the row's value is the mean over draws. All of it runs on the cached embeddings: no protocol
costs an encoder forward beyond the one embedding of each part.

A HEAR 2021 module as the encoder (`EncoderSpec.module`, `HearModuleEmbedder`): the embedding is the module's own
`get_scene_embeddings` of each clip, read at the model's `sample_rate` (resampled by upstream.frontend.resample), in
batches of `batch_clips` clips of equal length (clips are never padded: padding would change a module's pooled
embedding). It is one "layer" (0, named `scene`): the recipe's embedding keys (layer, pooling, columns, padding,
chunk_frames, precision, sample_rate) are ours and do not apply; the row records what was used instead
(`encoder_source: hear_module`, the module, its version). It is cached like ours, keyed by the module's identity
(tasks.api.hear_module_identity: module name, model file bytes, options), its version and sample rate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler, normalize
from torch import nn
from torch.utils.data import DataLoader, Dataset

from upstream.console import progress
from upstream.errors import AsitError
from upstream.identity import encoder_identity
from upstream.precision import resolve_precision
from upstream.runtime import EncoderRuntime, resolve_layers

from .api import HEAR_MODULE_SOURCE, EncoderSpec, TaskResult
from .compute import ForwardCounter
from .datasets import Example
from .embedding_cache import EmbeddingCache, cache_key, examples_digest
from .encoders import Backbone, HearModule, load_backbone, load_hear_module
from .metrics import evaluate, primary_metric
from .recipes import ProbeRecipe, recipe_digest, recipe_yaml
from .task_data import TaskData

Split = tuple[np.ndarray, np.ndarray]


class _Waves(Dataset):
    def __init__(self, examples: Sequence[Example], sample_rate: int) -> None:
        self.examples, self.sample_rate = examples, sample_rate

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.examples[i].load(self.sample_rate)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class CachedEmbeddings:
    """What both embedders share: per layer, the scene embeddings of a part from the cache, or `compute`d for the
    layers the cache lacks and stored, and the loading of a part's clips in batches (`_batches`). Subclasses give
    `layers`, `identity(layer)` (the key's components without the examples), `cache`, `recipe` and
    `compute(examples, layers) -> {layer: [N, D]}`."""

    layers: list[int]
    cache: EmbeddingCache
    recipe: ProbeRecipe

    def identity(self, layer: int) -> dict[str, Any]:
        raise NotImplementedError

    def compute(self, examples: Sequence[Example], layers: Sequence[int], desc: str = "embedding"
                ) -> dict[int, np.ndarray]:
        raise NotImplementedError

    def _batches(self, examples: Sequence[Example], sample_rate: int, desc: str
                 ) -> Iterator[tuple[list[torch.Tensor], Sequence[Example]]]:
        """(waves, their examples) for each loaded batch of `batch_clips` clips read at `sample_rate`, in order."""
        loader = DataLoader(_Waves(examples, sample_rate), batch_size=self.recipe.batch_clips,
                            num_workers=self.recipe.num_workers, collate_fn=list)
        first = 0
        for waves in progress(loader, desc=desc, unit="batch"):
            yield waves, examples[first:first + len(waves)]
            first += len(waves)

    def embeddings(self, task: str, part: str, examples: Sequence[Example]) -> dict[int, np.ndarray]:
        """layer -> [N, D'] scene embeddings of `examples`, for every candidate layer."""
        shared = {"task": task, "part": part, "examples": examples_digest(examples), "count": len(examples)}
        components = {layer: {**self.identity(layer), **shared} for layer in self.layers}
        found: dict[int, np.ndarray] = {}
        for layer, parts in components.items():
            cached = self.cache.load(cache_key(parts), len(examples))
            if cached is not None:
                found[layer] = cached
        missing = [layer for layer in self.layers if layer not in found]
        if missing:
            desc = f"{task} {part}: embedding {len(examples)} clips"
            for layer, array in self.compute(examples, missing, desc).items():
                self.cache.store(cache_key(components[layer]), array, components[layer])
                found[layer] = array
        return found


class Embedder(CachedEmbeddings):
    """Scene embeddings of examples for one encoder + recipe, through the cache (one entry per layer); the runtime is
    built lazily so a fully cached probe does not even move the encoder to the device."""

    def __init__(self, backbone: Backbone, encoder: EncoderSpec, recipe: ProbeRecipe, seed: int,
                 cache: EmbeddingCache) -> None:
        self.backbone, self.encoder, self.recipe, self.cache = backbone, encoder, recipe, cache
        self.device = _device(recipe.device)
        self.precision = resolve_precision(recipe.precision, self.device)    # `auto` resolved: part of the key
        self.layers = candidate_layers(recipe.layer, backbone.encoder.depth)
        chunk = recipe.chunk_frames or backbone.encoder.trained_frames
        self._identity = {
            # the weights + config identity (upstream.identity), under the key's historical name
            "checkpoint_sha256": encoder_identity(encoder.path), "which": "teacher", "init": encoder.init,
            "init_seed": seed if encoder.init == "scratch" else None,
            "frontend": dataclasses.asdict(backbone.frontend),
            "runtime": {"pooling": recipe.pooling, "columns": recipe.columns, "padding": recipe.padding,
                        "chunk_frames": int(chunk), "precision": self.precision},
        }
        self._runtime: EncoderRuntime | None = None
        self.counter: ForwardCounter | None = None

    def identity(self, layer: int) -> dict[str, Any]:
        """What determines one layer's embeddings (the cache key's components, without the examples)."""
        return {**self._identity, "runtime": {**self._identity["runtime"], "layer": layer}}

    @property
    def runtime(self) -> EncoderRuntime:
        if self._runtime is None:
            options = dataclasses.replace(self.recipe.runtime_options(), precision=self.precision)
            self._runtime = EncoderRuntime(self.backbone.encoder, self.backbone.frontend, options
                                           ).to(self.device).eval()
            self.counter = ForwardCounter(self._runtime.encoder)
        return self._runtime

    @property
    def forwards(self) -> dict[str, int]:
        return {"calls": self.counter.calls if self.counter else 0,
                "chunks": self.counter.chunks if self.counter else 0}

    def compute(self, examples: Sequence[Example], layers: Sequence[int], desc: str = "embedding"
                ) -> dict[int, np.ndarray]:
        """Every requested layer's scene embeddings from one encoder pass per batch."""
        runtime = self.runtime
        out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
        for waves, batch_examples in self._batches(examples, runtime.sample_rate, desc):
            result = runtime([w.to(self.device) for w in waves], layers=list(layers))
            for layer in layers:
                scene = result.scene(layer, self.recipe.pooling).float().cpu().numpy()
                check_finite(scene, batch_examples, layer)
                out[layer].append(scene)
        return {layer: np.concatenate(parts) for layer, parts in out.items()}

    def close(self) -> None:
        if self.counter is not None:
            self.counter.close()

    def describe(self) -> dict[str, Any]:
        """The row's fields about the encoder and how its embeddings were made."""
        return {"init": self.encoder.init, "encoder_arch": self.backbone.encoder.arch,
                "encoder_source": self.backbone.source, "pooling": self.recipe.pooling,
                "columns": self.recipe.columns, "padding": self.recipe.padding,
                "frontend": {"sample_rate": self.backbone.frontend.sample_rate, "stats": self.backbone.frontend.stats}}


class HearModuleEmbedder(CachedEmbeddings):
    """Scene embeddings of examples from a HEAR 2021 module's `get_scene_embeddings`, through the cache (one entry
    per part). The model is loaded up front (its sample rate is part of the key, and the row describes it) but moved
    to the device only when a part has to be embedded."""

    LAYER = 0                      # the module's one embedding, under the layer index the selection expects
    LAYER_NAME = "scene"
    PRECISION = "module's own"     # no autocast: the module runs as its authors wrote it

    def __init__(self, encoder: EncoderSpec, recipe: ProbeRecipe, cache: EmbeddingCache) -> None:
        self.encoder, self.recipe, self.cache = encoder, recipe, cache
        self.device = _device(recipe.device)
        self.precision = self.PRECISION
        self.layers = [self.LAYER]
        self.module: HearModule = load_hear_module(encoder)
        self.calls = 0             # get_scene_embeddings calls made by this embedder
        self.clips = 0             # clips those calls embedded

    def identity(self, layer: int) -> dict[str, Any]:
        """What determines the module's embeddings (the cache key's components, without the examples)."""
        return {"checkpoint_sha256": self.module.identity, "encoder_source": HEAR_MODULE_SOURCE,
                "hear_module": self.module.name, "module_version": self.module.version,
                "options": dict(self.encoder.options), "sample_rate": self.module.sample_rate,
                "embedding": "get_scene_embeddings", "layer": layer}

    @property
    def forwards(self) -> dict[str, int]:
        return {"calls": self.calls, "chunks": self.clips}

    @torch.no_grad()
    def compute(self, examples: Sequence[Example], layers: Sequence[int] = (LAYER,), desc: str = "embedding"
                ) -> dict[int, np.ndarray]:
        """{0: [N, D] scene embeddings}, the module called once per length among the clips of each loaded batch."""
        loaded = self.module
        loaded.model.to(self.device)           # a no-op once there: the model moves only when a part is embedded
        out: list[np.ndarray] = []
        for waves, batch_examples in self._batches(examples, loaded.sample_rate, desc):
            rows: list[np.ndarray | None] = [None] * len(waves)
            for length in dict.fromkeys(w.shape[-1] for w in waves):
                index = [i for i, w in enumerate(waves) if w.shape[-1] == length]
                audio = torch.stack([waves[i] for i in index]).float().to(self.device)
                scene = loaded.scene_embeddings(audio)
                self.calls += 1
                self.clips += len(index)
                scene = torch.as_tensor(scene).detach().float().cpu().numpy()
                if scene.ndim != 2 or scene.shape[0] != len(index):
                    raise AsitError(f"HEAR module {loaded.name}: get_scene_embeddings returned shape "
                                    f"{tuple(scene.shape)} for {len(index)} clips; the HEAR API asks for [n, D]")
                for row, i in zip(scene, index):
                    rows[i] = row
            batch = np.stack(rows)      # type: ignore[arg-type]
            check_finite(batch, batch_examples, self.LAYER_NAME)
            out.append(batch)
        return {self.LAYER: np.concatenate(out)}

    def close(self) -> None:
        """Nothing to release (the ForwardCounter hook of our encoders has no counterpart here)."""

    def describe(self) -> dict[str, Any]:
        """The row's fields about the module: which, which version, at which rate (pooling etc. are the module's)."""
        loaded = self.module
        return {"init": self.encoder.init, "encoder_arch": type(loaded.model).__name__,
                "encoder_source": HEAR_MODULE_SOURCE, "encoder_module": loaded.name,
                "encoder_module_version": loaded.version, "encoder_module_options": dict(self.encoder.options),
                "layer_name": self.LAYER_NAME, "pooling": None, "columns": None, "padding": None,
                "frontend": {"sample_rate": loaded.sample_rate, "stats": None}}


def describe_clip(example: Example) -> str:
    """The clip's file, with its segment when it is one (silence crops of a background-noise file)."""
    if not example.start_s and example.duration_s is None:
        return str(example.path)
    end = "end" if example.duration_s is None else f"{example.start_s + example.duration_s:g} s"
    return f"{example.path} (segment {example.start_s:g} s to {end})"


def check_finite(embeddings: np.ndarray, examples: Sequence[Example], layer: int | str) -> None:
    """Refuse a batch of scene embeddings (row i = examples[i]) holding NaN or Inf, naming the first such clip: it
    would otherwise be cached and reach scikit-learn as an anonymous "Input X contains NaN". `layer`: an index, or
    a name (a HEAR module's "scene")."""
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if not len(bad):
        return
    row = int(bad[0])
    values = int((~np.isfinite(embeddings[row])).sum())
    others = f"; {len(bad) - 1} other clip(s) of its batch too" if len(bad) > 1 else ""
    which = f"layer {layer}" if isinstance(layer, int) else layer
    raise AsitError(f"the {which} embedding of {describe_clip(examples[row])} holds NaN or Inf ({values} of "
                    f"{embeddings.shape[1]} values{others}), so its part is not cached; check that clip's audio and "
                    "the encoder's weights (e.g. a diverged checkpoint)")


def candidate_layers(layer: int | str, depth: int) -> list[int]:
    """The recipe's `layer` -> the layers to embed: one index (negative from the end), or `best` = all of 0..depth,
    one of which the probe selects on validation data."""
    if layer == "best":
        return list(range(depth + 1))
    if isinstance(layer, str):
        raise AsitError(f"recipe layer must be an integer or 'best', got {layer!r}")
    try:
        return resolve_layers([layer], depth)
    except AsitError as exc:
        raise AsitError(f"recipe {exc}") from None


# ------------------------------------------------------------------------------------------------- classifiers

def _full_scores(scores: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Columns for every class (classes absent from training get probability 0)."""
    out = np.zeros((scores.shape[0], num_classes), np.float64)
    out[:, classes] = scores
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, C: float, multilabel: bool, num_classes: int, recipe: ProbeRecipe,
                 seed: int) -> Any:
    base = LogisticRegression(C=C, max_iter=recipe.max_iter, random_state=seed)
    if multilabel:
        return OneVsRestClassifier(base, n_jobs=recipe.n_jobs).fit(x, y)
    return base.fit(x, y)


def predict_logistic(model: Any, x: np.ndarray, multilabel: bool, num_classes: int) -> np.ndarray:
    if multilabel:
        return model.predict_proba(x)
    return _full_scores(model.predict_proba(x), model.classes_, num_classes)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_mlp(x: np.ndarray, y: np.ndarray, multilabel: bool, num_classes: int, recipe: ProbeRecipe, seed: int,
              epochs: int, monitor: tuple[np.ndarray, np.ndarray] | None = None
              ) -> tuple[MLP, list[float]]:
    """Adam for `epochs`; with `monitor` (x, y) also the metric after every epoch."""
    torch.manual_seed(seed)
    model = MLP(x.shape[1], recipe.hidden_dim, num_classes, recipe.mlp_dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.mlp_lr, weight_decay=recipe.mlp_weight_decay)
    xs = torch.from_numpy(x).float()
    ys = torch.from_numpy(y).float() if multilabel else torch.from_numpy(y).long()
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(xs), generator=generator).split(recipe.mlp_batch_size):
            optimizer.zero_grad()
            loss_fn(model(xs[batch]), ys[batch]).backward()
            optimizer.step()
        if monitor is not None:
            scores = predict_mlp(model, monitor[0], multilabel)
            history.append(next(iter(evaluate(monitor[1], scores, multilabel).values())))
    return model, history


@torch.no_grad()
def predict_mlp(model: MLP, x: np.ndarray, multilabel: bool) -> np.ndarray:
    model.eval()
    logits = model(torch.from_numpy(x).float())
    return (torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)).numpy()


# kNN: at most this many query x fit similarities (float32) are held at once
KNN_BLOCK = 1 << 22


def knn_neighbours(fit_x: np.ndarray, query_x: np.ndarray, k: int) -> np.ndarray:
    """[n_query, min(k, n_fit)] indices of the fit rows most cosine-similar to each query row, nearest first.

    Computed here rather than by scikit-learn's `kneighbors`, whose order among equal distances is not documented:
    ties go to the lower fit index, so the neighbours (and the scores) are deterministic. Blocks of query rows
    bound the memory (`KNN_BLOCK` similarities at a time)."""
    n_fit = len(fit_x)
    k = min(int(k), n_fit)
    if k < 1:
        raise AsitError("kNN needs at least one labelled clip to compare with")
    fit = normalize(fit_x).astype(np.float32)      # unit rows: the dot product is the cosine similarity
    query = normalize(query_x).astype(np.float32)
    out = np.empty((len(query), k), np.int64)
    step = max(1, KNN_BLOCK // n_fit)
    for first in range(0, len(query), step):
        sim = query[first:first + step] @ fit.T
        kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1:k]          # each row's k-th largest similarity
        above = sim > kth
        tied = sim == kth                       # of the clips tied at the k-th place, keep the lowest indices
        keep = above | (tied & (np.cumsum(tied, axis=1) <= k - above.sum(axis=1, keepdims=True)))
        index = np.nonzero(keep)[1].reshape(len(sim), k)                # ascending index within each row
        order = np.argsort(-np.take_along_axis(sim, index, axis=1), axis=1, kind="stable")
        out[first:first + len(sim)] = np.take_along_axis(index, order, axis=1)
    return out


def knn_shares(neighbours: np.ndarray, y: np.ndarray, ks: Sequence[int], multilabel: bool, num_classes: int
               ) -> Iterator[tuple[int, np.ndarray]]:
    """(k, [n_query, num_classes] share of the first k neighbours carrying each class) for each k in `ks`, in
    ascending order, from one pass over the neighbour ranks (a grid of k costs one neighbour search). Plain shares:
    class-vote ties then go to the lower class index under argmax, as in scikit-learn's uniform-weight
    KNeighborsClassifier."""
    counts = np.zeros((len(neighbours), num_classes), np.float64)
    rows = np.arange(len(neighbours))
    wanted = sorted(set(int(k) for k in ks))
    if wanted and not 1 <= wanted[0] <= wanted[-1] <= neighbours.shape[1]:
        raise AsitError(f"kNN shares asked for k in {wanted}, with {neighbours.shape[1]} neighbours found")
    for rank in range(wanted[-1] if wanted else 0):
        column = neighbours[:, rank]
        if multilabel:
            counts += y[column]
        else:
            counts[rows, y[column]] += 1.0
        if rank + 1 in wanted:
            yield rank + 1, counts / (rank + 1)


def knn_predict(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, k: int, multilabel: bool,
                num_classes: int) -> np.ndarray:
    """Class scores of the test rows: the share of each one's k nearest fit rows (k capped at the fit rows)."""
    neighbours = knn_neighbours(fit_x, test_x, k)
    return next(knn_shares(neighbours, fit_y, [neighbours.shape[1]], multilabel, num_classes))[1]


def selection_splits(train: Sequence[Example], n_valid: int, cv_folds: int) -> tuple[list[Split], str]:
    """(fit, score) index pairs into the labelled rows [train…, valid…] on which hyper-parameters are chosen.

    With a valid split: fit on train, score on valid. Without one: grouped K-fold cross-validation over the training
    role, the groups being the dataset's own folds where it has them (ESC-50: leave one training fold out) or else
    its groups (AudioSet videos, speakers), so no source ever sits on both sides."""
    n_train = len(train)
    if n_valid:
        return [(np.arange(n_train), np.arange(n_train, n_train + n_valid))], "valid split"
    ids = np.array([f"fold {e.fold}" if e.fold is not None else e.group if e.group is not None else f"#{i}"
                    for i, e in enumerate(train)])
    kind = "folds" if all(e.fold is not None for e in train) else "groups"
    k = min(cv_folds, len(set(ids)))
    if k < 2:
        raise AsitError(f"cannot choose probe hyper-parameters: the training role has {len(set(ids))} {kind} and no "
                        "valid split (give a single C and a single layer, or more data)")
    splits = list(GroupKFold(n_splits=k).split(np.zeros(n_train), groups=ids))
    return splits, f"{k}-fold cross-validation over the training {kind}"


def _score(y: np.ndarray, scores: np.ndarray, multilabel: bool) -> float:
    return float(next(iter(evaluate(y, scores, multilabel).values())))


def _logistic_score(x: np.ndarray, y: np.ndarray, split: Split, C: float, multilabel: bool, num_classes: int,
                    recipe: ProbeRecipe, seed: int) -> float:
    """One grid point on one selection split: standardise on the fit rows, fit, score the held-out rows."""
    fit, held = split
    scaler = StandardScaler().fit(x[fit])
    model = fit_logistic(scaler.transform(x[fit]), y[fit], C, multilabel, num_classes, recipe, seed)
    return _score(y[held], predict_logistic(model, scaler.transform(x[held]), multilabel, num_classes), multilabel)


def grid_scores(x: np.ndarray, y: np.ndarray, splits: Sequence[Split], multilabel: bool, num_classes: int,
                recipe: ProbeRecipe, seed: int) -> dict[float, float]:
    """Mean score over the selection splits of every grid point: C for `logistic` (the split × C fits run in
    parallel on `n_jobs` processes), epochs (1…) for `mlp`, k for `knn` (one neighbour search per split, k capped
    at the split's fit rows); each split standardised by its own fit rows."""
    if recipe.classifier == "knn":
        sums = {float(k): 0.0 for k in recipe.knn_k}
        for fit, held in splits:
            scaler = StandardScaler().fit(x[fit])
            neighbours = knn_neighbours(scaler.transform(x[fit]), scaler.transform(x[held]), max(recipe.knn_k))
            capped = {k: min(k, neighbours.shape[1]) for k in recipe.knn_k}
            found = {k: _score(y[held], shares, multilabel)
                     for k, shares in knn_shares(neighbours, y[fit], capped.values(), multilabel, num_classes)}
            for k in recipe.knn_k:
                sums[float(k)] += found[capped[k]]
        return {k: total / len(splits) for k, total in sums.items()}
    if recipe.classifier == "logistic":
        points = [(split, C) for split in splits for C in recipe.C]
        scores = Parallel(n_jobs=recipe.n_jobs)(
            delayed(_logistic_score)(x, y, split, C, multilabel, num_classes, recipe, seed) for split, C in points)
        return {C: float(np.mean([s for (_, c), s in zip(points, scores) if c == C])) for C in recipe.C}
    totals: dict[float, float] = {}
    for fit, held in splits:
        scaler = StandardScaler().fit(x[fit])
        _, history = train_mlp(scaler.transform(x[fit]), y[fit], multilabel, num_classes, recipe, seed,
                               recipe.mlp_epochs, monitor=(scaler.transform(x[held]), y[held]))
        for epoch, score in enumerate(history, start=1):
            totals[epoch] = totals.get(epoch, 0.0) + score
    return {point: total / len(splits) for point, total in totals.items()}


def fit_and_predict(x: np.ndarray, y: np.ndarray, test_x: np.ndarray, hyper: float, multilabel: bool,
                    num_classes: int, recipe: ProbeRecipe, seed: int) -> np.ndarray:
    """Standardise on the labelled rows, fit the classifier with its chosen C (or epochs, or k), score the test
    rows."""
    scaler = StandardScaler().fit(x)
    x, test_x = scaler.transform(x), scaler.transform(test_x)
    if recipe.classifier == "knn":
        return knn_predict(x, y, test_x, int(hyper), multilabel, num_classes)
    if recipe.classifier == "logistic":
        model = fit_logistic(x, y, hyper, multilabel, num_classes, recipe, seed)
        return predict_logistic(model, test_x, multilabel, num_classes)
    mlp, _ = train_mlp(x, y, multilabel, num_classes, recipe, seed, int(hyper))
    return predict_mlp(mlp, test_x, multilabel)


def hyper_field(hyper: float, recipe: ProbeRecipe) -> dict[str, Any]:
    """The classifier's hyper-parameter as rows name it: `C` (logistic), `epochs` (mlp) or `k` (knn)."""
    if recipe.classifier == "logistic":
        return {"C": float(hyper)}
    return {"k" if recipe.classifier == "knn" else "epochs": int(hyper)}


def grid_points(recipe: ProbeRecipe) -> list[float]:
    """The classifier's candidate hyper-parameters: C, k, or the MLP's full epoch count (its history gives 1…)."""
    if recipe.classifier == "knn":
        return [float(k) for k in recipe.knn_k]
    return list(recipe.C) if recipe.classifier == "logistic" else [float(recipe.mlp_epochs)]


def selected_point(layer: int, hyper: float, score: float | None, recipe: ProbeRecipe) -> dict[str, Any]:
    """The grid point a probe row used, named as the recipe names it (C, the MLP's epochs, or k), with its mean
    selection score (None when nothing was selected: one layer and one C or k, or a few-shot probe)."""
    point: dict[str, Any] = {"layer": int(layer), **hyper_field(hyper, recipe)}
    point["score"] = None if score is None else round(float(score), 6)
    return point


def hyper_name(recipe: ProbeRecipe) -> str:
    """The classifier's hyper-parameter as `selection_on` names it when nothing is selected: `C` (logistic), `k`
    (knn) or `mlp_epochs` (the MLP's fixed epoch count of a few-shot probe)."""
    return "C" if recipe.classifier == "logistic" else "k" if recipe.classifier == "knn" else "mlp_epochs"


def unselected(layer: int, point: float, reason: str, recipe: ProbeRecipe) -> dict[str, Any]:
    """The selection record of a probe that selected nothing (`reason` says why): no split, the single grid point
    with a null score."""
    return {"selection_on": f"none ({reason})", "selection_splits": 0,
            "selection": {str(layer): {f"{point:g}": None}},
            "selected": selected_point(layer, point, None, recipe)}


def select(features: dict[int, np.ndarray], y: np.ndarray, train: Sequence[Example], n_valid: int,
           multilabel: bool, num_classes: int, recipe: ProbeRecipe, seed: int) -> tuple[int, float, dict[str, Any]]:
    """The (layer, C or epochs or k) with the best selection score over every candidate layer's labelled features.

    Ties go to the earlier layer and the smaller C / fewer epochs / fewer neighbours. Without anything to choose, no
    split is made. `info` records how: `selection` (layer -> point -> mean selection score, null for the single
    point of a grid with nothing to choose) and `selected` (the chosen layer and C / epochs / k with its score), so
    every row says how its probe was chosen."""
    grid = grid_points(recipe)
    if len(features) == 1 and len(grid) == 1 and recipe.classifier != "mlp":
        layer, point = next(iter(features)), grid[0]
        return layer, point, unselected(layer, point, f"one layer, one {hyper_name(recipe)}", recipe)
    splits, source = selection_splits(train, n_valid, recipe.cv_folds)
    table = {layer: grid_scores(x, y, splits, multilabel, num_classes, recipe, seed) for layer, x in features.items()}
    best = max(((layer, point) for layer, scores in table.items() for point in scores),
               key=lambda lp: (table[lp[0]][lp[1]], -lp[0], -lp[1]))
    info = {"selection_on": source, "selection_splits": len(splits),
            "selection": {str(layer): {f"{point:g}": round(score, 6) for point, score in scores.items()}
                          for layer, scores in table.items()},
            "selected": selected_point(best[0], best[1], table[best[0]][best[1]], recipe)}
    return best[0], best[1], info


# ---------------------------------------------------------------------------------------------------- few-shot

def few_shot_rows(y: np.ndarray, multilabel: bool, num_classes: int, shots: int, seed: int, draw: int
                  ) -> np.ndarray:
    """Sorted indices of the labelled rows one few-shot draw fits on: `shots` clips per class, sampled without
    replacement by a generator seeded with (seed, draw), so a draw is the same in every run and draws differ.

    A class with fewer clips keeps all of them. Multi-label: classes are visited rarest first (ties by class index)
    and each is topped up to `shots` clips carrying it from the clips not drawn yet; a clip counts for every label it
    carries, so a class ends with at least min(shots, its clips) positives (common classes often more) and the draw
    stays near shots × classes clips instead of multiplying by the labels per clip. Single-label, this is plainly
    `shots` clips per class."""
    rng = np.random.default_rng([seed, draw])
    members = [np.flatnonzero(y[:, c] > 0) if multilabel else np.flatnonzero(y == c) for c in range(num_classes)]
    chosen = np.zeros(len(y), bool)
    for c in sorted(range(num_classes), key=lambda c: (len(members[c]), c)):
        need = shots - int(chosen[members[c]].sum())
        if need <= 0:
            continue
        free = members[c][~chosen[members[c]]]
        chosen[free if len(free) <= need else rng.choice(free, size=need, replace=False)] = True
    return np.flatnonzero(chosen)


def few_shot_point(recipe: ProbeRecipe) -> float:
    """The fixed hyper-parameter of a few-shot fit: the recipe's first C or k, or the MLP's `mlp_epochs` (with k
    clips per class there is nothing to hold out and select on)."""
    return grid_points(recipe)[0]


def few_shot(features: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, hyper: float,
             multilabel: bool, num_classes: int, recipe: ProbeRecipe, seed: int
             ) -> tuple[dict[str, float], np.ndarray, dict[str, Any]]:
    """Fit and score `draws` few-shot draws of the labelled rows at the fixed `hyper` (`few_shot_point`): (metrics
    averaged over draws, the first draw's test scores, the row's few-shot record: shots, draws, per-draw scores of
    the primary metric, their std, clips)."""
    per_draw: list[dict[str, float]] = []
    first_scores: np.ndarray              # the first draw's (draws >= 1: the recipe checks it)
    sizes = []
    for draw in range(recipe.draws):
        rows = few_shot_rows(y, multilabel, num_classes, recipe.shots, seed, draw)
        scores = fit_and_predict(features[rows], y[rows], test_x, hyper, multilabel, num_classes, recipe, seed)
        per_draw.append(evaluate(test_y, scores, multilabel))
        sizes.append(int(len(rows)))
        if draw == 0:
            first_scores = scores
    metrics = {name: float(np.mean([m[name] for m in per_draw])) for name in per_draw[0]
               if all(name in m for m in per_draw)}
    primary = [float(m[primary_metric(multilabel)]) for m in per_draw]
    record = {"shots": recipe.shots, "draws": recipe.draws, "draw_scores": [round(v, 6) for v in primary],
              "draw_std": round(float(np.std(primary, ddof=1)), 6) if len(primary) > 1 else None,
              "draw_n_fit": sizes}
    return metrics, first_scores, record


# ------------------------------------------------------------------------------------------------------ runner

def run_probe(data: TaskData, encoder: EncoderSpec, recipe: ProbeRecipe, seed: int, work_dir: Path
              ) -> TaskResult:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "recipe.yaml").write_text(recipe_yaml(recipe))
    cache = EmbeddingCache(recipe.cache_dir)
    embedder: Embedder | HearModuleEmbedder
    if encoder.module:
        embedder = HearModuleEmbedder(encoder, recipe, cache)
    else:
        embedder = Embedder(load_backbone(encoder, seed=seed, sample_rate=recipe.sample_rate), encoder, recipe,
                            seed, cache)
    try:
        parts = {name: embedder.embeddings(data.task, name, examples) for name, examples in data.parts.items()
                 if any(name in names for names in data.roles.values())}
    finally:
        embedder.close()

    def role(name: str, layer: int) -> np.ndarray:
        names = data.roles.get(name, [])
        if not names:
            return np.zeros((0, parts[next(iter(parts))][layer].shape[1]), np.float32)
        return np.concatenate([parts[n][layer] for n in names])

    train, valid, test = data.train, data.valid, data.test
    labelled_y = data.targets(train + valid)
    features = {layer: np.concatenate([role("train", layer), role("valid", layer)]) for layer in embedder.layers}
    multilabel, num_classes = data.multilabel, data.num_classes
    fit_on = "train+valid" if valid else "train"
    test_y = data.targets(test)
    if recipe.shots:
        layer, hyper = embedder.layers[0], few_shot_point(recipe)     # the recipe allows one layer with shots > 0
        metrics, scores, shots = few_shot(features[layer], labelled_y, role("test", layer), test_y, hyper,
                                          multilabel, num_classes, recipe, seed)
        reason = f"{recipe.shots}-shot: fixed {hyper_name(recipe)}, the recipe's first"
        info = {**unselected(layer, hyper, reason, recipe), **shots}
        fit_on = f"{recipe.shots} per class from {fit_on}, {recipe.draws} draws"
        n_fit = shots["draw_n_fit"][0]                               # the draw whose predictions are saved
    else:
        layer, hyper, info = select(features, labelled_y, train, len(valid), multilabel, num_classes, recipe, seed)
        scores = fit_and_predict(features[layer], labelled_y, role("test", layer), hyper, multilabel, num_classes,
                                 recipe, seed)
        metrics = evaluate(test_y, scores, multilabel)
        info = {**info, "shots": 0}
        n_fit = int(len(labelled_y))
    predictions = (work_dir / "predictions.npz").resolve()
    data.save_predictions(predictions, scores, test_y, test)     # few-shot: the first draw's test scores
    extra: dict[str, Any] = {
        **data.summary(), "mode": "probe", "metrics": metrics, "classifier": recipe.classifier,
        **hyper_field(hyper, recipe), **info, "fit_on": fit_on, "n_fit": n_fit,
        "layer": layer, "layers_tried": embedder.layers, "embedding_dim": int(features[layer].shape[1]),
        "device": str(embedder.device), "precision": embedder.precision,
        "encoder_forwards": embedder.forwards["chunks"], "encoder_forward_calls": embedder.forwards["calls"],
        "cache_hits": cache.hits, "cache_misses": cache.misses, "cache_dir": str(cache.root),
        "recipe_digest": recipe_digest(recipe), "predictions": str(predictions), **embedder.describe(),
    }
    return TaskResult(data.metric, float(metrics[data.metric]), extra)
