"""Full finetuning (Lightning) of an encoder + classification head with a task's recipe (paper Table I).

Data. Each clip goes through the shared `Frontend` (never a second fbank) configured with the checkpoint's sample
rate and the TASK's normalisation statistics (Table I), then is cropped (randomly, when longer) or zero-padded (= the
dataset mean) to `train_frames`. Test and validation clips are cut into consecutive `eval_frames` chunks, the last
one ending at the clip's end (overlapping its neighbour rather than being mostly padding), and the chunk logits
averaged, so a clip is always seen whole; for 10 s / 5 s / 1 s clips at 1024 / 512 / 128 frames this is exactly one
padded chunk.

Training step: mixup (timm's `Mixup`, per example, AST's meaning of the probability; multi-label targets mixed as
dense vectors) → SpecAugment (torchaudio Frequency/TimeMasking, one mask of each per example, applied after
normalisation so masked bins equal the dataset mean) → encoder → pooling → LayerNorm + Linear → BCE (multi-label)
or CE. Optimiser: AdamW with timm's parameter groups (no decay on biases/norms/pos_embed/cls_token; layer-wise lr
decay when `layer_decay` < 1), timm's CosineLRScheduler with linear warm-up, stepped per update.

Knowledge distillation (`distill:` in the recipe; ACM-SSKD §3.4, eqs. 11–13): L = task loss + γ·MSE(F, F_teacher),
F = the classifier's pooled features (through a learned Linear when the widths differ), F_teacher = a frozen
teacher's token mean over the whole training clip, computed once before training and kept in the work folder
(`teacher_features.npz`), and mixed by timm's Mixup with the clip's own λ.

Evaluation gathers predictions from every device and de-duplicates them by example index, so the metric is exact
under DDP (whose sampler pads the last batch with repeats).

Best and last. With `select: best_valid` the test split is scored twice after training: with the last epoch's
weights and with the best-valid checkpoint. The row's value and `predictions.npz` are the best epoch's (the weights
selected on valid data, as before); `extra.epoch_scores` holds both (`predictions_last.npz` for the last), and
`extra.reported_epoch` says which one the value is. Without validation only the last exists. Encoder forwards
(training, validation and both test passes, in chunks and calls) are counted by a hook on the encoder's stem.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torchaudio
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from timm.data import Mixup
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from upstream.console import EpochBar, quiet_lightning
from upstream.encoders import AudioEncoder
from upstream.errors import AsitError
from upstream.frontend import Frontend, FrontendConfig, pad_or_crop
from upstream.runtime import check_pooling, pool_scene, scene_dim, step_vectors
from upstream.resume import check_checkpoint_fits
from upstream.teachers import TeacherConfig, load_teacher

from .api import EncoderSpec, TaskResult
from .compute import ForwardCounter
from .datasets import Example
from .encoders import load_backbone
from .metrics import evaluate
from .recipes import FinetuneRecipe, recipe_digest, recipe_yaml
from .task_data import TaskData


# ------------------------------------------------------------------------------------------------------- model

class AudioClassifier(nn.Module):
    """Encoder + the runtime's pooling (step vectors, then scene pooling of the last layer) + LayerNorm/Linear head
    (AST's mlp_head). Input: normalised fbank [B, T, F] (the training crop is one chunk: no padding to mask)."""

    def __init__(self, encoder: AudioEncoder, num_classes: int, pooling: str = "mean", columns: str = "mean") -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling, self.columns = pooling, columns
        check_pooling(encoder, pooling)
        dim = scene_dim(encoder, pooling, columns)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def pooled(self, feats: torch.Tensor) -> torch.Tensor:
        states = self.encoder.forward_steps(feats)
        cls = states.cls[-1] if states.cls is not None else None
        return pool_scene(step_vectors(states.steps[-1], self.columns), None, cls, self.pooling)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(feats))


# -------------------------------------------------------------------------------------------------------- data

class ClipDataset(Dataset):
    """Training: (fbank [frames, F], target, index). Evaluation: (chunks [n, frames, F], target, index)."""

    def __init__(self, examples: list[Example], targets: np.ndarray, frontend: FrontendConfig, frames: int,
                 train: bool, random_crop: bool = True) -> None:
        self.examples, self.targets = examples, torch.from_numpy(targets)
        self.frontend = Frontend(frontend)
        self.frames, self.train, self.random_crop = frames, train, random_crop

    def __len__(self) -> int:
        return len(self.examples)

    def features(self, i: int) -> torch.Tensor:
        return self.frontend(self.examples[i].load(self.frontend.config.sample_rate))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        feats = self.features(i)
        if self.train:
            spare = feats.shape[0] - self.frames
            offset = int(torch.randint(0, spare + 1, ()).item()) if spare > 0 and self.random_crop else 0
            return pad_or_crop(feats, self.frames, offset, self.frontend.config.pad_value), self.targets[i], i
        return eval_chunks(feats, self.frames, self.frontend.config.pad_value), self.targets[i], i


def eval_chunks(feats: torch.Tensor, frames: int, fill: float = 0.0) -> torch.Tensor:
    """[n, frames, F] chunks covering a whole clip: consecutive, the last one ending at the clip's end (overlapping
    its neighbour) so that no chunk is mostly padding; only a clip shorter than one chunk is padded (with `fill`, the
    frontend's pad value: the normalised mean, or silence for official ASiT checkpoints)."""
    total = feats.shape[0]
    count = max(1, math.ceil(total / frames))
    starts = [c * frames for c in range(count - 1)] + [max(0, total - frames)]
    return torch.stack([pad_or_crop(feats, frames, start, fill) for start in starts])


def collate_train(batch: list[tuple[torch.Tensor, torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    feats, targets, index = zip(*batch)
    return {"x": torch.stack(feats), "y": torch.stack(targets), "index": torch.tensor(index)}


def collate_eval(batch: list[tuple[torch.Tensor, torch.Tensor, int]]) -> dict[str, Any]:
    chunks, targets, index = zip(*batch)
    return {"x": torch.cat(chunks), "counts": torch.tensor([c.shape[0] for c in chunks]),
            "y": torch.stack(targets), "index": torch.tensor(index)}


def sample_weights(targets: np.ndarray, multilabel: bool) -> np.ndarray:
    """AST/PANNs balanced sampling: an example's weight is the sum over its labels of 1 / (label count)."""
    hot = targets if multilabel else np.eye(int(targets.max()) + 1, dtype=np.float32)[targets]
    counts = hot.sum(axis=0)
    return (hot / np.maximum(counts, 1.0)).sum(axis=1)


# ------------------------------------------------------------------------------------------------------ module

def teacher_features(examples: list[Example], recipe: FinetuneRecipe, sample_rate: int, cache: Path) -> np.ndarray:
    """[N, C] teacher features (token mean over each whole clip), computed once and kept in `cache` with the
    teacher and clip list they belong to: a resumed run reuses them, any other run recomputes them. The teacher is
    frozen and reads each clip's waveform at `sample_rate`."""
    config = {k: v for k, v in recipe.distill.items() if k != "gamma"}
    key = json.dumps({"distill": config, "sample_rate": sample_rate, "clips": [str(e.path) for e in examples]},
                     sort_keys=True)
    if cache.is_file():
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                return stored["features"]
    teacher = load_teacher(TeacherConfig(**config), sample_rate)
    rows = [teacher(example.load(sample_rate)[None].float()).tokens.mean(dim=1)[0].numpy() for example in examples]
    features = np.stack(rows).astype(np.float32)
    partial = cache.with_name(cache.name + ".partial")
    with partial.open("wb") as handle:
        np.savez(handle, features=features, key=np.array(key))
    partial.replace(cache)
    return features


class FinetuneModule(L.LightningModule):
    def __init__(self, model: AudioClassifier, recipe: FinetuneRecipe, multilabel: bool, num_classes: int,
                 teacher: np.ndarray | None = None) -> None:
        super().__init__()
        self.model, self.recipe = model, recipe
        # distillation targets per training example (None: no distillation) and the student-side projection
        self.teacher_targets = torch.from_numpy(teacher) if teacher is not None else None
        self.distill_proj: nn.Module | None = None
        if teacher is not None:
            width = model.head[1].in_features
            self.distill_proj = nn.Identity() if width == teacher.shape[1] else nn.Linear(width, teacher.shape[1])
        # checkpoint loaders hand encoders over in eval mode, and Lightning >= 2.2 keeps each submodule's mode:
        # without this, drop path (and any dropout) would silently stay off for the whole finetuning run
        self.model.train()
        self.multilabel, self.num_classes = multilabel, num_classes
        if multilabel and recipe.loss != "bce":
            raise AsitError(f"recipe loss={recipe.loss} cannot train the multi-label task {recipe.task}: use loss=bce")
        self.mixup = (Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=0.0, prob=recipe.mixup, mode="elem",
                            label_smoothing=recipe.label_smoothing if not multilabel else 0.0,
                            num_classes=num_classes, multi_label=multilabel)
                      if recipe.mixup > 0 else None)
        self.freq_mask = torchaudio.transforms.FrequencyMasking(recipe.freq_mask, iid_masks=True)
        self.time_mask = torchaudio.transforms.TimeMasking(recipe.time_mask, iid_masks=True)
        self.lr_scheduler: CosineLRScheduler | None = None
        self._outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.valid_history: list[tuple[int, float]] = []          # (epoch, primary metric) per validation

    # -- optimisation ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        r = self.recipe
        encoder = self.model.encoder
        skip = sorted(encoder.no_weight_decay())
        if r.layer_decay < 1.0:
            # timm groups the ViT as stem (0), blocks 1..L (the final norm with block L); one more factor puts the
            # head alone at scale 1, as in BEiT/MAE: stem decay^(L+1), block i decay^(L+1-i), head 1
            groups = [dict(g, lr_scale=g["lr_scale"] * r.layer_decay) for g in param_groups_layer_decay(
                encoder, weight_decay=r.weight_decay, no_weight_decay_list=skip, layer_decay=r.layer_decay)]
        else:
            groups = param_groups_weight_decay(encoder, weight_decay=r.weight_decay, no_weight_decay_list=skip)
        groups += [dict(g, lr_scale=1.0) for g in param_groups_weight_decay(self.model.head, r.weight_decay)]
        if self.distill_proj is not None and any(True for _ in self.distill_proj.parameters()):
            groups += [dict(g, lr_scale=1.0) for g in param_groups_weight_decay(self.distill_proj, r.weight_decay)]
        optimizer = torch.optim.AdamW(groups, lr=r.lr, betas=tuple(r.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, int(self.trainer.num_training_batches))
        warmup = min(int(round(r.warmup_epochs * per_epoch)), total - 1)
        self.lr_scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=r.min_lr,
                                              warmup_t=warmup, warmup_lr_init=r.min_lr,
                                              warmup_prefix=True, t_in_epochs=False)
        return optimizer

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        assert self.lr_scheduler is not None
        self.lr_scheduler.step_update(int(self.global_step))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["valid_history"] = list(self.valid_history)     # so a resumed run reports the whole history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.valid_history = [tuple(item) for item in checkpoint.get("valid_history", [])]  # type: ignore[misc]

    # -- steps ----------------------------------------------------------------------------------------------
    def augment(self, x: torch.Tensor, y: torch.Tensor, carried: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Mixup, then SpecAugment. `carried` [B, C] (distillation targets) rides through Mixup as extra rows of
        the input, so each example's targets are mixed with its own λ, and is split off before SpecAugment."""
        frames = x.shape[1]
        if carried is not None:
            width = x.shape[2]
            rows = nn.functional.pad(carried, (0, (-carried.shape[1]) % width)).reshape(x.shape[0], -1, width)
            x = torch.cat([x, rows.to(x.dtype)], dim=1)
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        if carried is not None:
            carried = x[:, frames:].reshape(x.shape[0], -1)[:, :carried.shape[1]]
            x = x[:, :frames]
        spec = x.transpose(1, 2).unsqueeze(1)                       # [B, 1, F, T]: torchaudio's layout
        if self.recipe.freq_mask > 0:
            spec = self.freq_mask(spec)
        if self.recipe.time_mask > 0:
            spec = self.time_mask(spec)
        return spec.squeeze(1).transpose(1, 2), y, carried

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.recipe.loss == "bce":                                # multi-hot, mixed, or one-hot class ids
            if y.ndim == 1:
                y = nn.functional.one_hot(y, self.num_classes)
            return nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
        if y.ndim == 2:                                              # mixed (soft) targets
            return nn.functional.cross_entropy(logits, y.to(logits.dtype))
        return nn.functional.cross_entropy(logits, y, label_smoothing=self.recipe.label_smoothing)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        targets = None
        if self.teacher_targets is not None:
            targets = self.teacher_targets.to(batch["x"].device)[batch["index"]]
        x, y, targets = self.augment(batch["x"], batch["y"], targets)
        size = x.shape[0]
        if targets is None:
            loss = self.loss(self.model(x), y)
        else:
            assert self.distill_proj is not None
            pooled = self.model.pooled(x)
            task = self.loss(self.model.head(pooled), y)
            regress = nn.functional.mse_loss(self.distill_proj(pooled).float(), targets.float())
            loss = task + float(self.recipe.distill.get("gamma", 1.0)) * regress
            self.log("train/task", task.detach(), on_step=True, on_epoch=True, batch_size=size, sync_dist=True)
            self.log("train/distill", regress.detach(), on_step=True, on_epoch=True, batch_size=size,
                     sync_dist=True)
        if not torch.isfinite(loss):
            raise AsitError(f"finetuning loss became {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=size,
                 sync_dist=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[-1]["lr"], on_step=True, on_epoch=False,
                 batch_size=size)
        return loss

    def _eval_step(self, batch: dict[str, Any]) -> None:
        logits = self.model(batch["x"]).float()
        per_clip = torch.stack([part.mean(dim=0) for part in logits.split(batch["counts"].tolist())])
        scores = torch.sigmoid(per_clip) if self.multilabel else torch.softmax(per_clip, dim=-1)
        self._outputs.append((batch["index"], scores.detach(), batch["y"]))

    def _eval_end(self, stage: str) -> dict[str, Any]:
        index = torch.cat([o[0] for o in self._outputs])
        scores = torch.cat([o[1] for o in self._outputs])
        targets = torch.cat([o[2] for o in self._outputs])
        self._outputs = []
        if self.trainer.world_size > 1:                            # equal per-rank counts (padded sampler)
            index, scores, targets = (self.all_gather(t).flatten(0, 1) for t in (index, scores, targets))
        order = np.unique(index.cpu().numpy(), return_index=True)[1]
        result = {"index": index.cpu().numpy()[order], "scores": scores.cpu().numpy()[order],
                  "targets": targets.cpu().numpy()[order]}
        result["metrics"] = evaluate(result["targets"], result["scores"], self.multilabel)
        self.results[stage] = result
        return result

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        value = float(next(iter(self._eval_end("valid")["metrics"].values())))
        self.valid_history.append((int(self.current_epoch) + 1, value))
        self.log("valid/metric", value, sync_dist=False)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")


# ------------------------------------------------------------------------------------------------------ runner

def _loader(dataset: ClipDataset, recipe: FinetuneRecipe, batch_size: int, seed: int, *, train: bool,
            weights: np.ndarray | None = None) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    sampler = (WeightedRandomSampler(torch.from_numpy(weights).double(), len(dataset), replacement=True,
                                     generator=generator) if weights is not None else None)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      drop_last=train, num_workers=recipe.num_workers, generator=generator,
                      collate_fn=collate_train if train else collate_eval,
                      persistent_workers=recipe.num_workers > 0)


# Recipes (paper Table I) count frames of 10 ms and mel bins of a 128-bin fbank.
RECIPE_FRAME_MS, RECIPE_MEL_BINS = 10.0, 128


def adapt_recipe(recipe: FinetuneRecipe, frontend: FrontendConfig, frames_per_step: int) -> FinetuneRecipe:
    """The recipe in the encoder frontend's units: crop lengths and SpecAugment widths keep their duration and
    bandwidth share (a 64-bin, 20 ms conformer frontend halves all four); crops become whole encoder steps."""
    time = RECIPE_FRAME_MS / float(frontend.frame_shift_ms)
    freq = frontend.num_mel_bins / RECIPE_MEL_BINS
    if time == 1.0 and freq == 1.0:
        adapted = recipe
    else:
        adapted = dataclasses.replace(
            recipe, train_frames=max(1, round(recipe.train_frames * time)),
            eval_frames=max(1, round(recipe.eval_frames * time)), time_mask=round(recipe.time_mask * time),
            freq_mask=round(recipe.freq_mask * freq))
    for name in ("train_frames", "eval_frames"):
        value = getattr(adapted, name)
        if value % frames_per_step:
            if adapted is recipe:
                raise AsitError(f"recipe {name} {value} must be a multiple of the encoder's {frames_per_step} "
                                "frames per step")
            adapted = dataclasses.replace(adapted, **{name: frames_per_step * math.ceil(value / frames_per_step)})
    return adapted


def task_frontend(frontend: FrontendConfig, stats: str) -> FrontendConfig:
    """The task's Table I statistics where they describe this fbank (128 bins, 25/10 ms); otherwise the
    encoder's own pretraining statistics (Table I has none for other frontends)."""
    return frontend.with_stats(stats) if frontend.table_i_geometry else frontend


def _prepare_work_dir(work_dir: Path, recipe: FinetuneRecipe, cell_identity: dict[str, Any]) -> Path | None:
    """Record what runs here; return the checkpoint to resume from when an identical run was interrupted."""
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp = work_dir / "run.json"
    identity = {"recipe_digest": recipe_digest(recipe), **cell_identity}
    last = work_dir / "checkpoints" / "last.ckpt"
    if stamp.is_file() and last.is_file():
        previous = json.loads(stamp.read_text())
        if previous != identity:
            raise AsitError(f"{work_dir} holds an interrupted run of another recipe or cell "
                            f"({stamp}); choose another work folder or delete it")
        return last
    stamp.write_text(json.dumps(identity, indent=2) + "\n")
    (work_dir / "recipe.yaml").write_text(recipe_yaml(recipe))
    return None


def checkpoint_callbacks(folder: Path, validate: bool) -> list[ModelCheckpoint]:
    """`last.ckpt` after every epoch, whatever else is kept (an interrupted run resumes from it), and, when selecting
    on validation, `best.ckpt` (first in the list: `trainer.test(ckpt_path="best")` reads the first checkpoint
    callback). Two callbacks, because one ModelCheckpoint writes `last` only at epochs where its top-k one saved:
    with `save_top_k=0` (select: last) or a validation score that did not improve, nothing at all."""
    last = ModelCheckpoint(dirpath=folder, filename=ModelCheckpoint.CHECKPOINT_NAME_LAST, monitor=None,
                           save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    if not validate:
        return [last]
    best = ModelCheckpoint(dirpath=folder, filename="best", monitor="valid/metric", mode="max", save_top_k=1,
                           enable_version_counter=False)
    return [best, last]


def run_finetune(data: TaskData, encoder: EncoderSpec, recipe: FinetuneRecipe, seed: int,
                 work_dir: Path) -> TaskResult:
    """Finetune `encoder` on `data.train` (selecting on `data.valid` if the recipe says so), report on `data.test`."""
    work_dir = Path(work_dir)
    if recipe.select == "best_valid" and not data.valid:
        raise AsitError(f"recipe select=best_valid but {data.task} has no validation split; use select=last")
    L.seed_everything(seed, workers=True, verbose=False)
    backbone = load_backbone(encoder, seed=seed, sample_rate=recipe.sample_rate, drop_path=recipe.drop_path)
    given, recipe = recipe, adapt_recipe(recipe, backbone.frontend, backbone.encoder.frames_per_step)
    frontend = task_frontend(backbone.frontend, recipe.stats)
    model = AudioClassifier(backbone.encoder, data.num_classes, recipe.pooling, recipe.columns)
    teacher = None
    if recipe.distill:
        work_dir.mkdir(parents=True, exist_ok=True)
        teacher = teacher_features(data.train, recipe, frontend.sample_rate, work_dir / "teacher_features.npz")
    module = FinetuneModule(model, recipe, data.multilabel, data.num_classes, teacher)

    train_targets = data.targets(data.train)
    batch = min(recipe.batch_size, len(data.train))
    if recipe.mixup > 0:
        batch -= batch % 2                                          # timm's Mixup pairs examples
    if batch < 1 or (recipe.mixup > 0 and batch < 2):
        raise AsitError(f"{data.task}: {len(data.train)} training clip(s) are too few for a batch")
    weights = sample_weights(train_targets, data.multilabel) if recipe.sampler == "weighted" else None
    train_loader = _loader(ClipDataset(data.train, train_targets, frontend, recipe.train_frames, True,
                                       recipe.train_crop == "random"), recipe, batch, seed, train=True,
                           weights=weights)

    def eval_loader(examples: list[Example]) -> DataLoader:
        dataset = ClipDataset(examples, data.targets(examples), frontend, recipe.eval_frames, False)
        return _loader(dataset, recipe, recipe.batch_size, seed, train=False)

    validate = recipe.select == "best_valid"
    resume = _prepare_work_dir(work_dir, given, {"task": data.task, "encoder": encoder.path, "init": encoder.init,
                                                  "seed": seed, "parts": data.roles})
    callbacks = [*checkpoint_callbacks(work_dir / "checkpoints", validate), EpochBar(f"{data.task} seed {seed}")]
    with quiet_lightning():                   # the device lines and tips, once per cell, say nothing the row lacks
        trainer = L.Trainer(max_epochs=recipe.epochs, accelerator=recipe.accelerator, devices=recipe.devices,
                            precision=recipe.precision, callbacks=callbacks, logger=CSVLogger(work_dir, name="logs"),
                            default_root_dir=work_dir, gradient_clip_val=recipe.clip_grad or None,
                            num_sanity_val_steps=0, log_every_n_steps=recipe.log_every_n_steps,
                            enable_progress_bar=False, enable_model_summary=False)
    if resume is not None:                    # one line naming the file, before any worker or process starts
        try:
            check_checkpoint_fits(resume, module, "interrupted run's checkpoint")
        except AsitError as exc:
            raise AsitError(f"{exc}; delete {work_dir} (or choose another work folder) to start afresh") from None
    counter = ForwardCounter(model.encoder)               # train + valid + test forwards of this process
    best_history: list[tuple[int, float]] = []
    try:
        with quiet_lightning(), warnings.catch_warnings():   # no validation data is this recipe's choice
            warnings.filterwarnings("ignore", message=".*defined a `validation_step` but have no `val_dataloader`")
            # best.ckpt's callback is first on purpose (checkpoint_callbacks), which is what Lightning warns about
            warnings.filterwarnings("ignore", message=".*configured with multiple `ModelCheckpoint` callbacks")
            trainer.fit(module, train_loader, eval_loader(data.valid) if validate else None,
                        ckpt_path=str(resume) if resume else None)
            epochs = int(trainer.current_epoch)
            history = list(module.valid_history)      # before test loads best.ckpt (and its shorter history)
            test_loader = eval_loader(data.test)
            # the weights fit ended with (the last epoch's); each test call replaces module.results["test"]
            trainer.test(module, test_loader, ckpt_path=None, verbose=False)
            tested = {"last": dict(module.results["test"])}
            if validate:                              # then the best-valid checkpoint: the weights the row reports
                trainer.test(module, test_loader, ckpt_path="best", verbose=False)
                tested["best"] = dict(module.results["test"])
                best_history = list(module.valid_history)   # best.ckpt's own history ends at its epoch
    finally:
        counter.close()
    forwards = reduce_counts(trainer, counter)
    reported = "best" if validate else "last"
    test = tested[reported]
    metrics = test["metrics"]
    metric = data.metric
    files = {"last": work_dir / "predictions.npz"}
    if validate:
        files = {"best": work_dir / "predictions.npz", "last": work_dir / "predictions_last.npz"}
    valid_at = dict(history)
    epoch_of = {"last": epochs}
    if validate and history:
        best_epoch, best_value = max(history, key=lambda item: item[1])
        epoch_of["best"] = int(best_history[-1][0]) if best_history else int(best_epoch)
    epoch_scores: dict[str, dict[str, Any]] = {}
    for name, result in tested.items():
        entry: dict[str, Any] = {"epoch": epoch_of.get(name), "value": float(result["metrics"][metric]),
                                 "metrics": result["metrics"], "predictions": str(files[name].resolve())}
        if validate:
            entry["valid"] = valid_at.get(epoch_of.get(name))     # the selection score of those weights
        epoch_scores[name] = entry
    extra: dict[str, Any] = {
        **data.summary(), "mode": "finetune", "metrics": metrics, "epochs": epochs,
        "steps": int(trainer.global_step), "batch_size": batch, "recipe_digest": recipe_digest(given),
        "init": encoder.init, "encoder_arch": backbone.encoder.arch, "encoder_source": backbone.source,
        "pooling": recipe.pooling, "columns": recipe.columns,
        "predictions": str(files[reported].resolve()),
        "reported_epoch": reported, "epoch_scores": epoch_scores,
        "device": str(trainer.strategy.root_device), "precision": str(trainer.precision),
        "encoder_forwards": forwards["chunks"], "encoder_forward_calls": forwards["calls"],
        "frontend": {"sample_rate": frontend.sample_rate, "stats": frontend.stats, "mean": frontend.mean,
                     "std": frontend.std},
        "frames": {"train": recipe.train_frames, "eval": recipe.eval_frames, "freq_mask": recipe.freq_mask,
                   "time_mask": recipe.time_mask},
        "resumed": resume is not None,
    }
    if recipe.distill:
        extra["distill"] = {k: v for k, v in recipe.distill.items()}
    if validate and history:
        extra.update(valid_history=history, best_valid=best_value, best_epoch=best_epoch)
    if trainer.is_global_zero:
        for name, result in tested.items():
            data.save_predictions(files[name], result["scores"], result["targets"],
                                  [data.test[i] for i in result["index"]])
        if not validate:                              # an earlier best_valid run's file would outlive its row
            (work_dir / "predictions_last.npz").unlink(missing_ok=True)
        if not recipe.keep_checkpoints:
            shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)
    return TaskResult(metric, float(metrics[metric]), extra)


def reduce_counts(trainer: L.Trainer, counter: ForwardCounter) -> dict[str, int]:
    """The encoder forwards of every process of the run (each DDP rank counts its own share of the batches)."""
    counts = torch.tensor([counter.chunks, counter.calls], dtype=torch.long)
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_backend() == "nccl":
            counts = counts.to(trainer.strategy.root_device)
        torch.distributed.all_reduce(counts)
    chunks, calls = (int(v) for v in counts.cpu())
    return {"chunks": chunks, "calls": calls}


__all__ = ["AudioClassifier", "ClipDataset", "FinetuneModule", "eval_chunks", "run_finetune", "sample_weights",
           "teacher_features"]
