"""Linear / MLP probe on frozen scene embeddings from the shared encoder runtime, with an embedding cache.

Embeddings. `upstream.runtime.EncoderRuntime` (the runtime HEAR and s3prl use) turns each whole clip into one vector
per encoder step of the chosen layer (`columns`); the scene embedding is the runtime's pooling of them (`pooling`:
mean, max, mean+max, or the CLS token of encoders that have one). The frontend is the checkpoint's own (the
statistics the encoder was pretrained with): a frozen encoder has never seen inputs normalised otherwise, so the
probe measures the representation, not a mismatch (finetuning, which adapts the encoder, uses the task statistics
of Table I instead). Embeddings are cached per part (split or ESC-50 fold) — see tasks/embedding_cache.py — and
encoder forwards are counted by a hook on the encoder's stem, so a repeated probe can prove it ran none.

Classifier. `logistic`: scikit-learn LogisticRegression on standardised embeddings (one-vs-rest for multi-label),
its C chosen on the valid split, or, for tasks without one (AS-20K, ESC-50), on a holdout of training groups
(ESC-50 source files, AudioSet videos) after which it is refit on the whole training role. `mlp`: one hidden layer
(ReLU, dropout) trained with Adam, the number of epochs chosen the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, Dataset

from upstream.errors import AsitError
from upstream.hashing import file_sha256
from upstream.encoders import AudioEncoder
from upstream.runtime import EncoderRuntime, resolve_layers

from .api import EncoderSpec, TaskResult
from .datasets import Example
from .embedding_cache import EmbeddingCache, cache_key, examples_digest
from .encoders import Backbone, load_backbone
from .metrics import evaluate
from .recipes import ProbeRecipe, recipe_digest, recipe_yaml
from .task_data import TaskData


class ForwardCounter:
    """Counts encoder forward passes (calls and chunks) through a hook on the encoder's stem, which every forward
    runs exactly once (ViT: the patch embedding, conformer: the stacking projection)."""

    def __init__(self, encoder: AudioEncoder) -> None:
        self.calls = 0
        self.chunks = 0
        self._handle = encoder.stem.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.calls += 1
        self.chunks += int(inputs[0].shape[0])

    def close(self) -> None:
        self._handle.remove()


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


class Embedder:
    """Scene embeddings of examples for one encoder + recipe, through the cache; the runtime is built lazily so a
    fully cached probe does not even move the encoder to the device."""

    def __init__(self, backbone: Backbone, encoder: EncoderSpec, recipe: ProbeRecipe, seed: int,
                 cache: EmbeddingCache) -> None:
        self.backbone, self.recipe, self.cache = backbone, recipe, cache
        self.device = _device(recipe.device)
        try:
            [self.layer] = resolve_layers([recipe.layer], backbone.encoder.depth)
        except AsitError as exc:
            raise AsitError(f"recipe {exc}") from None
        chunk = recipe.chunk_frames or backbone.encoder.trained_frames
        self.identity = {
            "checkpoint_sha256": file_sha256(encoder.path), "which": "teacher", "init": encoder.init,
            "init_seed": seed if encoder.init == "scratch" else None,
            "frontend": dataclasses.asdict(backbone.frontend),
            "runtime": {"layer": self.layer, "pooling": recipe.pooling, "columns": recipe.columns,
                        "padding": recipe.padding, "chunk_frames": int(chunk), "precision": recipe.precision},
        }
        self._runtime: EncoderRuntime | None = None
        self.counter: ForwardCounter | None = None

    @property
    def runtime(self) -> EncoderRuntime:
        if self._runtime is None:
            self._runtime = EncoderRuntime(self.backbone.encoder, self.backbone.frontend,
                                           self.recipe.runtime_options()).to(self.device).eval()
            self.counter = ForwardCounter(self._runtime.encoder)
        return self._runtime

    @property
    def forwards(self) -> dict[str, int]:
        return {"calls": self.counter.calls if self.counter else 0,
                "chunks": self.counter.chunks if self.counter else 0}

    def compute(self, examples: Sequence[Example]) -> np.ndarray:
        runtime = self.runtime
        loader = DataLoader(_Waves(examples, runtime.sample_rate), batch_size=self.recipe.batch_clips,
                            num_workers=self.recipe.num_workers, collate_fn=list)
        out = []
        for waves in loader:
            result = runtime([w.to(self.device) for w in waves], layers=[self.layer])
            vectors = result.scene(-1, self.recipe.pooling)
            out.append(vectors.float().cpu().numpy())
        return np.concatenate(out)

    def embeddings(self, task: str, part: str, examples: Sequence[Example]) -> np.ndarray:
        components = {**self.identity, "task": task, "part": part, "examples": examples_digest(examples),
                      "count": len(examples)}
        key = cache_key(components)
        cached = self.cache.load(key, len(examples))
        if cached is not None:
            return cached
        embeddings = self.compute(examples)
        self.cache.store(key, embeddings, components)
        return embeddings

    def close(self) -> None:
        if self.counter is not None:
            self.counter.close()


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


def selection_split(groups: Sequence[str | None], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held out) with every group (source file, video) on one side only."""
    ids = np.array([g if g is not None else f"#{i}" for i, g in enumerate(groups)])
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    fit, held = next(splitter.split(np.zeros(len(ids)), groups=ids))
    return fit, held


def fit_and_predict(train: tuple[np.ndarray, np.ndarray], select: tuple[np.ndarray, np.ndarray] | None,
                    test_x: np.ndarray, multilabel: bool, num_classes: int,
                    recipe: ProbeRecipe, seed: int, full_train: tuple[np.ndarray, np.ndarray]
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """Choose the hyper-parameter on `select` (if any) training on `train`; the final model is trained on
    `full_train` (= `train` when selection used a real valid split) and scores `test_x`."""
    info: dict[str, Any] = {"classifier": recipe.classifier}
    if recipe.classifier == "logistic":
        best_c, scores_by_c = recipe.C[0], {}
        if select is not None and len(recipe.C) > 1:
            for C in recipe.C:
                model = fit_logistic(*train, C, multilabel, num_classes, recipe, seed)
                scores_by_c[C] = next(iter(evaluate(select[1], predict_logistic(model, select[0], multilabel,
                                                                                 num_classes), multilabel).values()))
            best_c = max(recipe.C, key=lambda c: scores_by_c[c])
        final = fit_logistic(*full_train, best_c, multilabel, num_classes, recipe, seed)
        info.update(C=best_c, selection={str(c): v for c, v in scores_by_c.items()})
        return predict_logistic(final, test_x, multilabel, num_classes), info
    epochs = recipe.mlp_epochs
    if select is not None:
        _, history = train_mlp(*train, multilabel, num_classes, recipe, seed, recipe.mlp_epochs, monitor=select)
        epochs = int(np.argmax(history)) + 1
        info["selection"] = history
    model, _ = train_mlp(*full_train, multilabel, num_classes, recipe, seed, epochs)
    info["epochs"] = epochs
    return predict_mlp(model, test_x, multilabel), info


# ------------------------------------------------------------------------------------------------------ runner

def run_probe(data: TaskData, encoder: EncoderSpec, recipe: ProbeRecipe, seed: int, work_dir: Path
              ) -> TaskResult:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "recipe.yaml").write_text(recipe_yaml(recipe))
    backbone = load_backbone(encoder, seed=seed, sample_rate=recipe.sample_rate)
    cache = EmbeddingCache(recipe.cache_dir)
    embedder = Embedder(backbone, encoder, recipe, seed, cache)
    try:
        parts = {name: embedder.embeddings(data.task, name, examples) for name, examples in data.parts.items()
                 if any(name in names for names in data.roles.values())}
    finally:
        embedder.close()

    def role(name: str) -> tuple[np.ndarray, np.ndarray, list[Example]]:
        names = data.roles.get(name, [])
        if not names:
            return np.zeros((0, backbone.encoder.embed_dim), np.float32), np.zeros(0), []
        examples = data.examples(name)
        return np.concatenate([parts[n] for n in names]), data.targets(examples), examples

    train_x, train_y, train_examples = role("train")
    valid_x, valid_y, _ = role("valid")
    test_x, test_y, test_examples = role("test")
    multilabel, num_classes = data.multilabel, data.num_classes

    needs_selection = (recipe.classifier == "logistic" and len(recipe.C) > 1) or recipe.classifier == "mlp"
    scaler = StandardScaler().fit(train_x)                    # statistics of the training role only
    full, test_in = (scaler.transform(train_x), train_y), scaler.transform(test_x)
    fit_set, select, selection_source = full, None, "none"
    if needs_selection:
        if len(valid_x):
            select, selection_source = (scaler.transform(valid_x), valid_y), "valid split"
        else:
            fit_idx, held_idx = selection_split([e.group for e in train_examples], recipe.holdout, seed)
            inner = StandardScaler().fit(train_x[fit_idx])
            fit_set = (inner.transform(train_x[fit_idx]), train_y[fit_idx])
            select = (inner.transform(train_x[held_idx]), train_y[held_idx])
            selection_source = f"holdout of {len(held_idx)} training clips ({recipe.holdout:g} of the groups)"
    scores, info = fit_and_predict(fit_set, select, test_in, multilabel, num_classes, recipe, seed, full)
    metrics = evaluate(test_y, scores, multilabel)
    metric = data.metric
    extra: dict[str, Any] = {
        **data.summary(), "mode": "probe", "metrics": metrics, **info, "selection_on": selection_source,
        "layer": embedder.layer, "pooling": recipe.pooling, "embedding_dim": int(train_x.shape[1]),
        "encoder_forwards": embedder.forwards["chunks"], "encoder_forward_calls": embedder.forwards["calls"],
        "cache_hits": cache.hits, "cache_misses": cache.misses, "cache_dir": str(cache.root),
        "recipe_digest": recipe_digest(recipe), "init": encoder.init,
        "encoder_source": backbone.source,
        "frontend": {"sample_rate": backbone.frontend.sample_rate, "stats": backbone.frontend.stats},
    }
    data.save_predictions(work_dir / "predictions.npz", scores, test_y, test_examples)
    return TaskResult(metric, float(metrics[metric]), extra)
