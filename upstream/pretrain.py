"""Self-supervised pretraining with Lightning: one module for every objective, on CPU, one GPU or many (DDP)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from timm.scheduler import CosineLRScheduler, PolyLRScheduler

from .atomic import atomic_write_text
from .checkpoint import save_encoder
from .errors import AsitError
from .frontend import STATS_MAX_FILES, estimate_stats
from .identity import encoder_identity
from .model_card import write_card
from .health import read_metrics, run_report  # noqa: F401 (read_metrics re-exported)
from .host_memory import freed_memory_kept
from .objectives import build_objective
from .pretrain_config import (DataConfig, OptimConfig, PretrainConfig, TrainerConfig,  # noqa: F401 (re-exported)
                             load_pretrain_config, load_pretrain_config_dict, parse_max_time)
from .pretrain_data import PretrainDataModule, check_data_needs, list_clips
from .resume import check_checkpoint_fits
from .rng import collect_rng_states, restore_rng_states
from .schedules import TrainingProgress, cosine
from .tensorboard_shim import tensorboard_without_tensorflow
from .workers import worker_errors

BUDGET_MARGIN = 0.9   # share of the time left that the time budget's step estimate plans to use


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
        if config.trainer.compile:
            self.objective.compile_layers()
        self.lr_scheduler: CosineLRScheduler | None = None
        self._progress: TrainingProgress | None = None
        self.budget_steps: int | None = None          # schedule length fixed by the time budget (checkpointed)
        self._clock: Callable[[], float] = time.monotonic
        self._session_start: tuple[float, int] | None = None   # (clock, global step) after this session's 1st step

    # -- schedules -------------------------------------------------------------------------------------------
    def schedule_steps(self) -> int:
        """The optimizer steps every schedule spans: max_epochs × steps per epoch, or fewer when trainer.max_steps or
        the time budget's estimate (which sets the trainer's max_steps) says so."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def progress(self) -> TrainingProgress:
        per_epoch = max(1, int(self.trainer.num_training_batches))
        return TrainingProgress(step=int(self.global_step), total_steps=self.schedule_steps(),
                                epoch=int(self.current_epoch), steps_per_epoch=per_epoch)

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
        self._build_lr_scheduler(optimizer)
        return optimizer

    def on_train_start(self) -> None:
        if self.budget_steps is not None and self.trainer.max_steps != self.budget_steps:
            # resumed after the time budget fixed the schedules' length (restored with the checkpoint)
            self.trainer.fit_loop.epoch_loop.max_steps = self.budget_steps
            self._build_lr_scheduler(self.optimizers().optimizer)  # type: ignore[union-attr]

    def _build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> None:
        """Warm-up, then cosine / linear to min_lr, reached by the last optimizer step (step schedule_steps − 1)."""
        cfg = self.config.optim
        total = self.schedule_steps()
        per_epoch = max(1, int(self.trainer.num_training_batches))
        warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_epochs * per_epoch))
        warmup = max(0, min(warmup, total - 2))
        scheduler = {"cosine": CosineLRScheduler, "linear": partial(PolyLRScheduler, power=1.0)}[cfg.schedule]
        # timm returns lr_min from t_initial steps after the warm-up on: the last step, total − 1, gets min_lr
        self.lr_scheduler = scheduler(
            optimizer, t_initial=max(1, total - 1 - warmup), lr_min=cfg.min_lr, warmup_t=warmup, warmup_lr_init=0.0,
            warmup_prefix=True, t_in_epochs=False)

    def _fit_time_budget(self) -> None:
        """After trainer.budget_probe_steps timed steps of this session, shorten the schedules (and the run) to the
        steps estimated to fit the time left; rank 0's estimate for every process."""
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is None or self._session_start is None:
            return
        start_time, start_step = self._session_start
        done = int(self.global_step) - start_step
        per_step = (self._clock() - start_time) / max(1, done)
        before = self.schedule_steps()
        steps = self.trainer.strategy.broadcast(min(before, budget_steps(int(self.global_step), per_step, remaining)))
        self.budget_steps = int(steps)
        if self.budget_steps < before:
            self.trainer.fit_loop.epoch_loop.max_steps = self.budget_steps
            self._build_lr_scheduler(self.optimizers().optimizer)  # type: ignore[union-attr]
        if self.trainer.is_global_zero:
            fits = f"{self.budget_steps} steps" if self.budget_steps < before else f"all {before} steps"
            print(f"[asit pretrain] time budget {self.config.trainer.max_time}: {per_step:.3g} s/step over "
                  f"{done} steps, {remaining:.0f} s left -> the schedules span {fits}", flush=True)

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
        for name, value in self.objective.pop_health().items():
            self.log(f"health/{name}", value, on_step=True, on_epoch=True, batch_size=size, sync_dist=True)
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
        if self.config.trainer.max_time and self.budget_steps is None:
            if self._session_start is None:   # the first step (start-up, first batches) is not timed
                self._session_start = (self._clock(), int(self.global_step))
            elif int(self.global_step) - self._session_start[1] >= self.config.trainer.budget_probe_steps:
                self._fit_time_budget()

    # -- exact resume ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = collect_rng_states()
        if self.budget_steps is not None:
            checkpoint["budget_steps"] = self.budget_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
        self.budget_steps = checkpoint.get("budget_steps")


def budget_steps(step: int, seconds_per_step: float, seconds_left: float, margin: float = BUDGET_MARGIN) -> int:
    """The total optimizer steps expected to fit a time budget: the steps done plus `margin` of the time left at the
    measured speed (the margin leaves room for epoch-end checkpoints and slower steps)."""
    return step + max(1, int(margin * max(0.0, seconds_left) / max(seconds_per_step, 1e-9)))


class ProgressReport(Callback):
    """`[asit pretrain] epoch e/E step s/S (p%) loss … elapsed … ETA …`: one line at each epoch end and every
    `every_s` seconds within one (0: epoch ends only), on rank 0. The loss is the mean over the epoch so far; the ETA
    extrapolates this session's speed to the schedules' last step."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._start: tuple[float, int] = (0.0, 0)
        self._last_line = 0.0
        self._loss_sum: torch.Tensor | float = 0.0    # kept on the device: no host sync per step
        self._loss_count = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.monotonic(), int(trainer.global_step))
        self._last_line = self._start[0]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            self._loss_sum = self._loss_sum + loss.detach().float()
            self._loss_count += 1
        if self.every_s > 0 and time.monotonic() - self._last_line >= self.every_s:
            self._report(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        self._last_line = now
        if not trainer.is_global_zero:
            return
        step = int(trainer.global_step)
        total = pl_module.schedule_steps() if isinstance(pl_module, PretrainModule) else step
        elapsed = now - self._start[0]
        done = step - self._start[1]
        eta = _clock_text(elapsed / done * max(0, total - step)) if done > 0 else "?"
        loss = f"{float(self._loss_sum) / self._loss_count:.4f}" if self._loss_count else "?"
        line = (f"[asit pretrain] epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {step}/{total} "
                f"({100.0 * step / max(1, total):.0f}%) loss {loss} elapsed {_clock_text(elapsed)} ETA {eta}")
        bar = trainer.progress_bar_callback
        if bar is not None:
            bar.print(line)          # above the progress bar instead of through it
        else:
            print(line, flush=True)


def _clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ExportEncoder(Callback):
    """Exports the objective's encoder (ASiT: the teacher backbone) and its model card when training ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            module: PretrainModule = pl_module  # type: ignore[assignment]
            meta = {"objective": module.config.objective.get("name"), "epoch": trainer.current_epoch,
                    "global_step": trainer.global_step, "config": dataclasses.asdict(module.config)}
            data = getattr(getattr(trainer, "datamodule", None), "data_fingerprint", None)
            if data is not None:           # what the encoder was pretrained on (model cards read meta["data"])
                meta["data"] = data
            encoder = module.objective.export_encoder()
            path = save_encoder(self.path, encoder, module.config.frontend, meta=meta)
            # its model card (no results yet: `asit export` with --results adds them), shown by `asit info RUN_DIR`
            write_card(path, encoder, module.config.frontend, meta, encoder_identity(path))


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
    callbacks.append(ProgressReport(tcfg.progress_every_s))
    callbacks.extend(extra_callbacks or [])
    # every (re)start logs to a new logs/version_N so a resume never overwrites earlier metrics
    tensorboard_without_tensorflow()          # event files without importing TensorFlow (upstream.tensorboard_shim)
    loggers = [CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")]
    return L.Trainer(
        max_epochs=tcfg.max_epochs, max_steps=tcfg.max_steps, max_time=parse_max_time(tcfg.max_time),
        accelerator=tcfg.accelerator, devices=tcfg.devices,
        num_nodes=tcfg.num_nodes, strategy=tcfg.strategy, precision=tcfg.precision,
        log_every_n_steps=tcfg.log_every_n_steps,
        limit_train_batches=tcfg.limit_train_batches, gradient_clip_val=config.optim.clip_grad or None,
        callbacks=callbacks, logger=loggers, default_root_dir=run_dir, use_distributed_sampler=False,
        enable_progress_bar=tcfg.enable_progress_bar, num_sanity_val_steps=0, enable_model_summary=True)


def resolve_resume(run_dir: Path, resume: str | None) -> str | None:
    if resume in (None, ""):
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(resume).is_file():
        raise AsitError(f"--resume {resume}: no such checkpoint")
    return resume


# what a run leaves in its folder (besides what others add): an earlier run is recognised by, and --overwrite removes
# what an earlier run leaves that would be lost: a config.yaml alone is a run that died before its first checkpoint
# (a typo in data.source), or another rank's start under torchrun / SLURM, so it does not count
RUN_MARKERS = ("checkpoints", "encoder.pt")
RUN_OUTPUTS = (*RUN_MARKERS, "encoder.md", "config.yaml", "summary.json", "logs", "tensorboard")


def earlier_run(run_dir: Path) -> list[str]:
    """The marks of an earlier run in `run_dir` (a non-empty checkpoints/, encoder.pt); [] if none."""
    found = []
    for name in RUN_MARKERS:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name + ("/" if path.is_dir() else ""))
    return found


# set by launchers to a process's place in a multi-process job (Lightning's DDP launcher re-runs the command with
# LOCAL_RANK=1.. ; torchrun sets RANK, SLURM SLURM_PROCID, multi-node Lightning NODE_RANK)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def first_process() -> bool:
    """Whether this is the job's first process (or the only one): the one that checks and clears the run folder.
    The others start after it or beside it, and find the folder that it has just begun to fill."""
    for name in RANK_VARIABLES:
        try:
            if int(os.environ.get(name, "0") or 0) != 0:
                return False
        except ValueError:
            continue
    return True


def check_run_dir(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """A new run (no --resume) refuses a folder that holds an earlier run unless --overwrite says to replace it:
    checked before any data is read or model built, by the job's first process only."""
    if resume not in (None, "") and overwrite:
        raise AsitError("--resume and --overwrite contradict each other: --resume continues the run in run_dir, "
                        "--overwrite replaces it")
    if resume in (None, "") and not overwrite and first_process():
        found = earlier_run(run_dir)
        if found:
            raise AsitError(f"run folder {run_dir} already holds an earlier run ({', '.join(found)}); pass "
                            "--resume auto to continue it or --overwrite to train from scratch and replace it")


def remove_earlier_run(run_dir: Path) -> None:
    """--overwrite: the earlier run's checkpoints, export, config, summary and logs go (nothing else in the folder),
    so the new run neither resumes from nor mixes its metrics with them. Only the job's first process deletes."""
    if not first_process():
        return
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


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
                    extra_callbacks: list[Callback] | None = None, report: bool = False,
                    overwrite: bool = False) -> Path:
    """Train, checkpoint every epoch (`checkpoints/last.ckpt` resumes exactly) and export `encoder.pt`; `report`:
    print the loss and health summary (first -> last epoch) at the end. A folder holding an earlier run is refused
    unless `resume` continues it or `overwrite` replaces it (that run's outputs are deleted)."""
    run_dir = Path(config.run_dir)
    check_run_dir(run_dir, resume, overwrite)              # before any data is read or model built
    ckpt_path = resolve_resume(run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_frontend_stats(config)
    if overwrite:
        remove_earlier_run(run_dir)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = PretrainModule(config)
    if ckpt_path is not None:
        check_checkpoint_fits(ckpt_path, module, "--resume checkpoint")   # one line, before any process starts
    needs = module.objective.data_needs()
    check_data_needs(config.data, needs, str(config.objective.get("name")))
    data = PretrainDataModule(config.data, config.frontend, config.seed, module.objective.view_transform(), needs)
    data.setup()  # fail on a bad data.source before any process is launched
    trainer = build_trainer(config, run_dir, extra_callbacks)
    started = time.time()
    # worker_errors: a corrupt clip read in a DataLoader worker gets its own one-line error; freed_memory_kept: the
    # step's large CPU temporaries are reused, not page-faulted anew every step (upstream/host_memory.py)
    with worker_errors(), freed_memory_kept():
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    if trainer.is_global_zero:
        summary = {"epochs": trainer.current_epoch, "global_step": trainer.global_step,
                   "schedule_steps": module.schedule_steps(), "budget_steps": module.budget_steps,
                   "seconds": round(time.time() - started, 1), "encoder": str(run_dir / "encoder.pt")}
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        if report:
            print("\n".join([f"[asit pretrain] {trainer.global_step} optimizer steps in {summary['seconds']:.0f} s; "
                              f"summary of {run_dir}:", *run_report(run_dir)]), flush=True)
    return run_dir
