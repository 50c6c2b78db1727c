"""Self-supervised pretraining with Lightning: one module for every objective, on CPU, one GPU or many (DDP)."""

from __future__ import annotations

import dataclasses
import json
import time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import pandas as pd
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from timm.scheduler import CosineLRScheduler, PolyLRScheduler

from .checkpoint import save_encoder
from .config import deep_merge, from_dict, load_config_file, parse_overrides
from .encoders import EncoderConfig, encoder_config_from_dict
from .errors import AsitError
from .frontend import STATS_MAX_FILES, FrontendConfig, estimate_stats
from .objectives import build_objective
from .pretrain_data import DataConfig, PretrainDataModule, list_audio
from .rng import collect_rng_states, restore_rng_states
from .schedules import TrainingProgress, cosine


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4               # per 256 samples: the effective lr is lr × global batch / 256 (DINO rule)
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04     # cosine to weight_decay_end
    weight_decay_end: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 3.0         # total-norm clipping (0 disables)
    schedule: str = "cosine"       # lr after warm-up: cosine to min_lr | linear to min_lr (timm PolyLRScheduler)
    warmup_steps: int = 0          # > 0: warm-up length in optimizer steps instead of warmup_epochs


@dataclass(frozen=True)
class TrainerConfig:
    max_epochs: int = 100
    max_steps: int = -1            # > 0: stop after this many optimizer steps (schedules span them)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"     # "bf16-mixed" for bf16 autocast
    log_every_n_steps: int = 10
    limit_train_batches: int | float | None = None
    checkpoint_every_n_steps: int = 0   # extra mid-epoch checkpoints (0: only at epoch ends)
    enable_progress_bar: bool = True


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    run_dir: str = "runs/pretrain"
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: Any = field(default_factory=EncoderConfig)     # any registered arch's config (`encoder.arch`)
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "asit"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def load_pretrain_config_dict(data: Mapping[str, Any]) -> PretrainConfig:
    config = from_dict(PretrainConfig, data)
    encoder = encoder_config_from_dict(config.encoder)
    frames = config.data.crop_frames
    if frames % encoder.frames_per_step:
        raise AsitError(f"data.crop_frames {frames} must be a multiple of the {encoder.arch} encoder's "
                        f"{encoder.frames_per_step} frames per step")
    if config.optim.schedule not in ("cosine", "linear"):
        raise AsitError(f"optim.schedule must be cosine or linear, got {config.optim.schedule!r}")
    if config.frontend.num_mel_bins != encoder.num_mel_bins:
        raise AsitError(f"frontend.num_mel_bins {config.frontend.num_mel_bins} differs from encoder.num_mel_bins "
                        f"{encoder.num_mel_bins}")
    return dataclasses.replace(config, encoder=encoder)


def load_pretrain_config(name_or_path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """A shipped config name or a YAML file, then `key.sub=value` overrides."""
    data = load_config_file(name_or_path, "pretrain")
    return load_pretrain_config_dict(deep_merge(data, parse_overrides(overrides or [])))


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "cls_token" in name


class PretrainModule(L.LightningModule):
    def __init__(self, config: PretrainConfig | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, PretrainConfig):
            config = load_pretrain_config_dict(config)
        self.config = config
        self.save_hyperparameters({"config": dataclasses.asdict(config)})
        self.objective = build_objective(config.objective, config.encoder)
        self.lr_scheduler: CosineLRScheduler | None = None
        self._progress: TrainingProgress | None = None

    # -- schedules -------------------------------------------------------------------------------------------
    def progress(self) -> TrainingProgress:
        trainer = self.trainer
        per_epoch = max(1, int(trainer.num_training_batches))
        total = max(1, int(trainer.estimated_stepping_batches))
        return TrainingProgress(step=int(self.global_step), total_steps=total, epoch=int(self.current_epoch),
                                steps_per_epoch=per_epoch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cfg = self.config.optim
        decay, no_decay = [], []
        for name, param in self.objective.named_parameters():
            if param.requires_grad:
                (no_decay if _no_decay(name, param) else decay).append(param)
        global_batch = self.config.data.batch_size * self.trainer.world_size
        lr = cfg.lr * global_batch / 256.0
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr, betas=tuple(cfg.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, int(self.trainer.num_training_batches))
        warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_epochs * per_epoch))
        warmup = min(warmup, total - 1)
        scheduler = {"cosine": CosineLRScheduler, "linear": partial(PolyLRScheduler, power=1.0)}[cfg.schedule]
        self.lr_scheduler = scheduler(
            optimizer, t_initial=max(1, total - warmup), lr_min=cfg.min_lr, warmup_t=warmup, warmup_lr_init=0.0,
            warmup_prefix=True, t_in_epochs=False)
        return optimizer

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._progress = progress = self.progress()
        assert self.lr_scheduler is not None
        self.lr_scheduler.step_update(progress.step)
        optimizer = self.optimizers().optimizer  # type: ignore[union-attr]
        optimizer.param_groups[0]["weight_decay"] = cosine(
            self.config.optim.weight_decay, self.config.optim.weight_decay_end, progress.step, progress.total_steps)

    # -- steps -----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        progress = self._progress or self.progress()
        losses = self.objective.training_losses(batch, progress)
        size = batch["views"].shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=True, prog_bar=name == "loss",
                     batch_size=size, sync_dist=True)
        optimizer = self.optimizers().optimizer  # type: ignore[union-attr]
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=size)
        self.log("train/weight_decay", optimizer.param_groups[0]["weight_decay"], on_step=True, on_epoch=False,
                 batch_size=size)
        for name, value in self.objective.metrics(progress).items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=size)
        if not torch.isfinite(losses["loss"]):
            raise AsitError(f"loss became {losses['loss'].item()} at step {progress.step} "
                            f"({ {k: float(v) for k, v in losses.items()} }); the last checkpoint is kept")
        return losses["loss"]

    def on_after_backward(self) -> None:
        self.objective.after_backward(self._progress or self.progress())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.objective.after_optimizer_step(self._progress or self.progress())

    # -- exact resume ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = collect_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])


class ExportEncoder(Callback):
    """Exports the objective's encoder (ASiT: the teacher backbone) when training ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            module: PretrainModule = pl_module  # type: ignore[assignment]
            save_encoder(self.path, module.objective.export_encoder(), module.config.frontend,
                         meta={"objective": module.config.objective.get("name"), "epoch": trainer.current_epoch,
                               "global_step": trainer.global_step, "config": dataclasses.asdict(module.config)})


def build_trainer(config: PretrainConfig, run_dir: Path, extra_callbacks: list[Callback] | None = None) -> L.Trainer:
    tcfg = config.trainer
    checkpoints = run_dir / "checkpoints"
    callbacks: list[Callback] = [ModelCheckpoint(dirpath=checkpoints, filename="epoch{epoch:03d}",
                                                 auto_insert_metric_name=False, every_n_epochs=1, save_last=True,
                                                 save_top_k=1)]
    if tcfg.checkpoint_every_n_steps > 0:
        callbacks.append(ModelCheckpoint(dirpath=checkpoints, filename="step{step:08d}",
                                         auto_insert_metric_name=False,
                                         every_n_train_steps=tcfg.checkpoint_every_n_steps, save_top_k=1))
    callbacks.append(ExportEncoder(run_dir / "encoder.pt"))
    callbacks.extend(extra_callbacks or [])
    # every (re)start logs to a new logs/version_N so a resume never overwrites earlier metrics
    loggers = [CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")]
    return L.Trainer(
        max_epochs=tcfg.max_epochs, max_steps=tcfg.max_steps, accelerator=tcfg.accelerator, devices=tcfg.devices,
        num_nodes=tcfg.num_nodes, strategy=tcfg.strategy, precision=tcfg.precision,
        log_every_n_steps=tcfg.log_every_n_steps,
        limit_train_batches=tcfg.limit_train_batches, gradient_clip_val=config.optim.clip_grad or None,
        callbacks=callbacks, logger=loggers, default_root_dir=run_dir, use_distributed_sampler=False,
        enable_progress_bar=tcfg.enable_progress_bar, num_sanity_val_steps=0, enable_model_summary=True)


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """All CSV metrics of a run, over its restarts (logs/version_*/metrics.csv), in step order."""
    files = sorted(Path(run_dir).glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not files:
        raise AsitError(f"no logs/version_*/metrics.csv under {run_dir}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def resolve_resume(run_dir: Path, resume: str | None) -> str | None:
    if resume in (None, ""):
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(resume).is_file():
        raise AsitError(f"--resume {resume}: no such checkpoint")
    return resume


def resolve_frontend_stats(config: PretrainConfig) -> PretrainConfig:
    """`frontend.stats: estimate` -> mean/std of the training data's fbank, stored in config.yaml and the export."""
    frontend = config.frontend
    if frontend.stats != "estimate" or (frontend.mean is not None and frontend.std is not None):
        return config
    files = list_audio(config.data.source, config.data.root, config.data.extensions)
    mean, std = estimate_stats(files, frontend, seed=config.seed)
    print(f"frontend statistics estimated from {min(len(files), STATS_MAX_FILES)} clip(s) of {config.data.source}: "
          f"mean {mean:.4f}, std {std:.4f}")
    return dataclasses.replace(config, frontend=frontend.with_estimate(mean, std))


def run_pretraining(config: PretrainConfig, resume: str | None = None,
                    extra_callbacks: list[Callback] | None = None) -> Path:
    """Train, checkpoint every epoch (`checkpoints/last.ckpt` resumes exactly) and export `encoder.pt`."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_frontend_stats(config)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = PretrainModule(config)
    data = PretrainDataModule(config.data, config.frontend, config.seed, module.objective.view_transform())
    data.setup()  # fail on a bad data.source before any process is launched
    trainer = build_trainer(config, run_dir, extra_callbacks)
    started = time.time()
    trainer.fit(module, datamodule=data, ckpt_path=resolve_resume(run_dir, resume))
    if trainer.is_global_zero:
        summary = {"epochs": trainer.current_epoch, "global_step": trainer.global_step,
                   "seconds": round(time.time() - started, 1), "encoder": str(run_dir / "encoder.pt")}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir
