"""Self-supervised pretraining with Lightning: one module for every objective, on CPU, one GPU or many (DDP)."""

from __future__ import annotations

import dataclasses
import json
import time
from functools import partial
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
from .errors import AsitError
from .frontend import STATS_MAX_FILES, estimate_stats
from .objectives import build_objective
from .pretrain_config import (DataConfig, OptimConfig, PretrainConfig, TrainerConfig,  # noqa: F401 (re-exported)
                             load_pretrain_config, load_pretrain_config_dict)
from .pretrain_data import PretrainDataModule, check_data_needs, list_clips
from .rng import collect_rng_states, restore_rng_states
from .schedules import TrainingProgress, cosine


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "cls_token" in name


class PretrainModule(L.LightningModule):
    def __init__(self, config: PretrainConfig | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, PretrainConfig):
            config = load_pretrain_config_dict(config)
        self.config = config
        self.save_hyperparameters({"config": dataclasses.asdict(config)})
        self.objective = build_objective(config.objective, config.encoder, config.frontend)
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
    files = list_clips(config.data).files
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
    needs = module.objective.data_needs()
    check_data_needs(config.data, needs, str(config.objective.get("name")))
    data = PretrainDataModule(config.data, config.frontend, config.seed, module.objective.view_transform(), needs)
    data.setup()  # fail on a bad data.source before any process is launched
    trainer = build_trainer(config, run_dir, extra_callbacks)
    started = time.time()
    trainer.fit(module, datamodule=data, ckpt_path=resolve_resume(run_dir, resume))
    if trainer.is_global_zero:
        summary = {"epochs": trainer.current_epoch, "global_step": trainer.global_step,
                   "seconds": round(time.time() - started, 1), "encoder": str(run_dir / "encoder.pt")}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir
