"""Recipes: per task and mode, everything a finetune or probe run does, as YAML data a user can read and override.

`tasks/recipes/<task>_<mode>.yaml` is the default recipe of a task and mode (e.g. `esc50_finetune`); files starting
with `_` hold shared parts (`inherit: _finetune_deit`). Each value is marked in its file as [paper] (ASiT, Table I or
text), [AST]/[SSAST]/[DeiT] (the recipes the paper follows) or [ours]. Overrides are `key=value` strings (CLI) or a
nested mapping (suites), applied on top of the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from upstream.config import deep_merge, from_dict, load_inheriting, parse_overrides
from upstream.errors import AsitError
from upstream.runtime import COLUMNS, POOLINGS, RuntimeOptions
from upstream.workers import resolve_num_workers

RECIPES_DIR = Path(__file__).parent
MODES = ("finetune", "probe")


def _choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise AsitError(f"recipe {name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _positive(name: str, value: float, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise AsitError(f"recipe {name} must be {'>= 0' if zero_ok else '> 0'}, got {value}")


def _resolve_workers(recipe: Any) -> None:
    """`num_workers: auto` becomes this machine's count when the recipe is read (so every loader gets a number)."""
    object.__setattr__(recipe, "num_workers", resolve_num_workers(recipe.num_workers, "recipe num_workers"))


@dataclass(frozen=True)
class FinetuneRecipe:
    """Full finetuning of the encoder + a classification head (Lightning). See tasks/recipes/*_finetune.yaml."""

    task: str
    mode: str = "finetune"
    dataset: dict[str, Any] = field(default_factory=dict)   # reader options (AudioSet: train/test/labels/missing)
    # input
    stats: str = "audioset"             # normalisation statistics (Table I) of the task
    sample_rate: int | None = None      # None: the checkpoint's frontend rate
    train_frames: int = 1024            # crop/pad length of training examples (multiple of the patch size)
    eval_frames: int = 1024             # test clips are cut into chunks of this length; logits are averaged
    train_crop: str = "random"          # random | start
    # augmentation and loss
    freq_mask: int = 0                  # SpecAugment: max width of one frequency mask (mel bins)
    time_mask: int = 0                  # SpecAugment: max width of one time mask (frames)
    mixup: float = 0.0                  # probability that an example is mixed with another (AST's --mixup)
    mixup_alpha: float = 10.0           # lambda ~ Beta(alpha, alpha)
    loss: str = "ce"                    # ce | bce
    label_smoothing: float = 0.0
    sampler: str = "uniform"            # uniform | weighted (AST/PANNs label-frequency weights)
    # model
    pooling: str = "mean"               # runtime scene pooling of the last layer: mean|max|mean+max|mean+std|cls|…
    columns: str = "mean"               # runtime step vector: mean of a step's tokens | concat
    drop_path: float = 0.1
    # optimisation
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: float = 1.0            # < 1: layer-wise lr decay (BEiT); 1 = off
    clip_grad: float = 0.0              # total-norm clipping (0 = off)
    select: str = "last"                # last | best_valid (checkpoint evaluated on the test split)
    # knowledge distillation (ACM-SSKD §3.4): {} = off; else teacher keys of upstream.teachers.TeacherConfig
    # (adapter, path, module, layer, which) + gamma, the weight of the feature regression
    distill: dict[str, Any] = field(default_factory=dict)
    # machinery
    num_workers: int | str = "auto"     # DataLoader workers: auto = min(8, usable cores - 1) | a whole number
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str = "32-true"
    keep_checkpoints: bool = False
    log_every_n_steps: int = 50

    def __post_init__(self) -> None:
        _choice("mode", self.mode, ("finetune",))
        _choice("train_crop", self.train_crop, ("random", "start"))
        _choice("loss", self.loss, ("ce", "bce"))
        _choice("sampler", self.sampler, ("uniform", "weighted"))
        _choice("pooling", self.pooling, POOLINGS)
        _choice("columns", self.columns, COLUMNS)
        _choice("select", self.select, ("last", "best_valid"))
        for name in ("train_frames", "eval_frames", "epochs", "batch_size", "lr"):
            _positive(name, getattr(self, name))
        for name in ("freq_mask", "time_mask", "min_lr", "warmup_epochs", "weight_decay", "drop_path", "clip_grad",
                     "label_smoothing"):
            _positive(name, getattr(self, name), zero_ok=True)
        _resolve_workers(self)
        if not 0.0 <= self.mixup <= 1.0:
            raise AsitError(f"recipe mixup is a probability in [0, 1], got {self.mixup}")
        if self.mixup > 0 and self.mixup_alpha <= 0:
            raise AsitError(f"recipe mixup_alpha must be > 0 when mixup is on, got {self.mixup_alpha}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise AsitError(f"recipe layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.distill:
            unknown = set(self.distill) - DISTILL_KEYS
            if unknown:
                raise AsitError(f"recipe distill has unknown key(s) {', '.join(sorted(unknown))}; keys: "
                                f"{', '.join(sorted(DISTILL_KEYS))}")
            if not self.distill.get("path") and self.distill.get("adapter") != "hear":
                raise AsitError("recipe distill.path is empty: give the teacher's local model file")
            _positive("distill.gamma", float(self.distill.get("gamma", 1.0)))


DISTILL_KEYS = {"adapter", "path", "module", "layer", "which", "gamma"}


CLASSIFIERS = ("logistic", "mlp", "knn")


@dataclass(frozen=True)
class ProbeRecipe:
    """A classifier on frozen scene embeddings: of the shared encoder runtime, or of a HEAR 2021 module's
    get_scene_embeddings (the runtime's fields below, layer to sample_rate, do not apply to a module). See
    tasks/recipes/*_probe.yaml."""

    task: str
    mode: str = "probe"
    dataset: dict[str, Any] = field(default_factory=dict)
    # embeddings (EncoderRuntime)
    layer: int | str = -1               # 0 = input embeddings … depth = final block; negative from the end; best
    pooling: str = "mean+std"           # runtime scene pooling: mean|max|mean+max|mean+std (of steps) | cls|mean+cls
    columns: str = "concat"             # runtime step vector: mean of a step's tokens | concat (ViT: 8 bands x D)
    padding: str = "step"               # runtime: last chunk padded to the next whole step | to chunk_frames
    chunk_frames: int | None = None     # None: the encoder's pretraining length
    precision: str = "auto"             # auto (bf16 where native, upstream.precision) | fp32 | bf16
    sample_rate: int | None = None      # None: the checkpoint's frontend rate
    batch_clips: int = 16               # clips per runtime call
    num_workers: int | str = "auto"     # audio-loading worker processes: auto = min(8, usable cores - 1) | a number
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    cache_dir: str | None = None        # None: $ASIT_CACHE_DIR/embeddings or ~/.cache/asit-hear/embeddings
    # classifier
    classifier: str = "logistic"        # logistic (scikit-learn) | mlp (torch, one hidden layer) | knn (cosine)
    C: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])   # logistic: chosen on validation
    knn_k: list[int] = field(default_factory=lambda: [1, 5, 10, 20])        # knn: neighbours, chosen like C
    shots: int = 0                      # few-shot: labelled clips per class in each draw; 0 = every labelled clip
    draws: int = 5                      # few-shot: seeded draws (probe seed, draw index); the row is their mean
    max_iter: int = 1000
    cv_folds: int = 5                   # no valid split: grouped K-fold CV over the training role chooses
    #                                     C / k / MLP epochs and the layer
    hidden_dim: int = 512               # mlp
    mlp_epochs: int = 100
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 1e-4
    mlp_batch_size: int = 256
    mlp_dropout: float = 0.1
    n_jobs: int = -1                    # processes for the selection grid (and one-vs-rest over classes)

    def __post_init__(self) -> None:
        _choice("mode", self.mode, ("probe",))
        self.runtime_options()  # the runtime's own checks, named as recipe keys
        self._checks()

    def runtime_options(self) -> RuntimeOptions:
        try:
            return RuntimeOptions(pooling=self.pooling, columns=self.columns, padding=self.padding,
                                  chunk_frames=self.chunk_frames, precision=self.precision)
        except AsitError as exc:
            raise AsitError(f"recipe {exc}") from None

    def _checks(self) -> None:
        _choice("classifier", self.classifier, CLASSIFIERS)
        if not self.C or any(c <= 0 for c in self.C):
            raise AsitError(f"recipe C must be a non-empty list of positive numbers, got {self.C}")
        if not self.knn_k or any(k < 1 for k in self.knn_k):
            raise AsitError(f"recipe knn_k must be a non-empty list of whole numbers >= 1, got {self.knn_k}")
        _positive("shots", self.shots, zero_ok=True)
        _positive("draws", self.draws)
        if self.shots and self.layer == "best":
            raise AsitError("recipe layer: best needs held-out labelled clips to choose a layer, and a few-shot "
                            "probe (shots > 0) selects nothing: give one layer (e.g. layer=-1)")
        if self.cv_folds < 2:
            raise AsitError(f"recipe cv_folds must be at least 2, got {self.cv_folds}")
        if isinstance(self.layer, str) and self.layer != "best":
            raise AsitError(f"recipe layer must be an integer or 'best', got {self.layer!r}")
        for name in ("batch_clips", "max_iter", "hidden_dim", "mlp_epochs", "mlp_lr", "mlp_batch_size"):
            _positive(name, getattr(self, name))
        _resolve_workers(self)
        if self.chunk_frames is not None:
            _positive("chunk_frames", self.chunk_frames)


Recipe = FinetuneRecipe | ProbeRecipe
RECIPE_TYPES: dict[str, type] = {"finetune": FinetuneRecipe, "probe": ProbeRecipe}


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A YAML file, or the name of a shipped recipe (tasks/recipes/<name>.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise AsitError(f"recipe {str(name_or_path)!r} is neither a YAML file nor a shipped recipe "
                    f"({', '.join(available_recipes())})")


def read_recipe_file(name_or_path: str | Path) -> dict[str, Any]:
    """The recipe's mapping with `inherit:` resolved (parent first, then this file's values)."""
    return load_inheriting(name_or_path, recipe_path)


def load_recipe(task: str, mode: str, recipe: str | Path = "",
                overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Recipe:
    """The recipe for `task` in `mode`: `recipe` (name or YAML; "" = `<task>_<mode>`), then `overrides`."""
    if mode not in MODES:
        raise AsitError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    data = read_recipe_file(recipe or f"{task}_{mode}")
    if overrides:
        extra = parse_overrides(list(overrides)) if not isinstance(overrides, Mapping) else dict(overrides)
        data = deep_merge(data, extra)
    data.setdefault("task", task)
    data.setdefault("mode", mode)
    if data["task"] != task or data["mode"] != mode:
        raise AsitError(f"recipe {recipe or f'{task}_{mode}'} is for {data['task']} {data['mode']}, "
                        f"not {task} {mode}")
    return from_dict(RECIPE_TYPES[mode], data)


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def recipe_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_dict(recipe), sort_keys=False)


# how a run is executed, not what it computes: left out of the digest, so changing them neither reruns finished
# suite cells nor splits the leaderboard (precision, devices and batch sizes do change results and stay in)
RUN_ONLY_FIELDS = frozenset({"num_workers", "n_jobs", "log_every_n_steps", "keep_checkpoints", "cache_dir",
                             "batch_clips", "device", "accelerator"})


def inactive_fields(recipe: Recipe) -> set[str]:
    """Probe fields added after rows were stored (kNN, few-shot) that the recipe's protocol does not use: `knn_k`
    unless the classifier is knn, `shots` and `draws` while few-shot is off. Left out of the digest, they keep every
    earlier probe's cell key and leaderboard row, and a value that cannot change the result splits nothing."""
    if not isinstance(recipe, ProbeRecipe):
        return set()
    out = set() if recipe.classifier == "knn" else {"knn_k"}
    return out | ({"shots", "draws"} if not recipe.shots else set())


def recipe_digest(recipe: Recipe) -> str:
    """Content hash of what a resolved recipe computes (run-only and unused protocol fields left out): the identity
    of suite cells and of a work folder's resumable checkpoints."""
    skip = RUN_ONLY_FIELDS | inactive_fields(recipe)
    fields = {k: v for k, v in recipe_dict(recipe).items() if k not in skip}
    canonical = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


__all__ = ["FinetuneRecipe", "ProbeRecipe", "Recipe", "available_recipes", "load_recipe", "recipe_digest",
           "recipe_dict", "recipe_path", "recipe_yaml"]
