"""`asit demo`: the whole harness on the embedded corpus in CPU minutes.

Stages run in order and share a `DemoContext`; each later integration (HEAR, leaderboard) adds one stage to
`STAGES`. A stage whose outputs already exist is not redone, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .health import format_summary, read_metrics, summarise
from .pretrain import load_pretrain_config, run_pretraining

# loss terms each demo objective logs (first -> last epoch shown by the demo)
LOSS_TERMS = {"asit": ("loss_recon", "loss_local", "loss_global", "loss"),
              "wav2vec2_conformer": ("contrastive", "diversity", "feature_penalty", "loss"),
              "acm_sskd": ("recon_intra", "recon_inter", "mse_intra", "mse_inter", "kl_intra", "kl_inter",
                           "contrast_intra", "contrast_inter", "loss"),
              "supmam": ("recon", "cls", "loss")}


@dataclass
class DemoContext:
    out_dir: Path
    seed: int = 0
    pretrain_overrides: list[str] = field(default_factory=list)
    corpus: Any = None                       # tasks.corpus.CorpusPaths
    encoder: Path | None = None              # the exported ASiT encoder
    pretrain_run: Path | None = None
    conformer: Path | None = None            # the exported wav2vec 2.0 conformer encoder
    acm_sskd: Path | None = None             # the exported ACM-SSKD ViT
    supmam: Path | None = None               # the exported SupMAM ViT
    report: dict[str, Any] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"[asit demo] {message}", flush=True)


def stage_corpus(ctx: DemoContext) -> None:
    from tasks.corpus import generate_corpus

    started = time.time()
    ctx.corpus = generate_corpus(ctx.out_dir / "corpus", seed=ctx.seed)
    ctx.log(f"corpus ready at {ctx.corpus.root} ({time.time() - started:.0f} s)")


def _pretrain(ctx: DemoContext, config_name: str, folder: str, overrides: list[str], report_key: str,
              source: Path | None = None) -> Path:
    """Pretrain (or find) one demo encoder; log and report each loss term's and health signal's first and last
    epoch."""
    run_dir = ctx.out_dir / folder
    encoder = run_dir / "encoder.pt"
    source = source or ctx.corpus.unlabeled
    config = load_pretrain_config(config_name, [f"data.source={source}", f"run_dir={run_dir}",
                                                f"seed={ctx.seed}", *overrides])
    if not encoder.is_file():
        ctx.log(f"pretraining a {config.encoder.depth}-block {config.encoder.arch}-{config.encoder.size} with "
                f"{config.objective['name']} for {config.trainer.max_epochs} epochs on {source}")
        run_pretraining(config, resume="auto")
    metrics = read_metrics(run_dir)
    losses = summarise(metrics, "train/", LOSS_TERMS[config.objective["name"]])
    health = summarise(metrics, "health/")
    ctx.report[report_key] = {row.name: row.values() for row in losses}
    ctx.report[f"{report_key}_health"] = {row.name: row.values() for row in health}
    for line in format_summary(losses, trend=True, indent="    ") + format_summary(health, indent="    "):
        ctx.log(line)
    ctx.log(f"encoder exported to {encoder}")
    return encoder


def stage_pretrain(ctx: DemoContext) -> None:
    ctx.encoder = _pretrain(ctx, "demo_tiny", "pretrain", ctx.pretrain_overrides, "pretrain")
    ctx.pretrain_run = ctx.encoder.parent


def stage_pretrain_conformer(ctx: DemoContext) -> None:
    """The second seed method at the same kind of budget: a tiny conformer with the wav2vec 2.0 objective."""
    ctx.conformer = _pretrain(ctx, "demo_conformer_tiny", "pretrain_conformer", [], "pretrain_conformer")


def stage_pretrain_peers(ctx: DemoContext) -> None:
    """The ViT peers at the same tiny budget as the demo's ASiT: ACM-SSKD on the same unlabelled clips; SupMAM on the
    corpus's labelled AudioSet list (its classifier branch needs labels; the demo has no CLAP, so the CLAP variants
    are left to the paper-size configs)."""
    # ViTs like the demo's ASiT: its encoder, data and trainer overrides apply; its objective keys are ASiT's own
    overrides = [o for o in ctx.pretrain_overrides if not o.startswith("objective.")]
    ctx.acm_sskd = _pretrain(ctx, "demo_acm_sskd_tiny", "pretrain_acm_sskd", overrides, "pretrain_acm_sskd")
    labelled = ctx.corpus.audioset / "metadata" / "balanced_train_segments.csv"
    ctx.supmam = _pretrain(ctx, "demo_supmam_tiny", "pretrain_supmam", overrides, "pretrain_supmam", source=labelled)


Stage = Callable[[DemoContext], None]


def _stage(module: str, name: str) -> Stage:
    """A stage defined in another package, imported only when it runs."""
    def run(ctx: DemoContext) -> None:
        import importlib

        getattr(importlib.import_module(module), name)(ctx)
    return run


STAGES: list[tuple[str, Stage]] = [
    ("corpus", stage_corpus),
    ("pretrain", stage_pretrain),
    ("pretrain_conformer", stage_pretrain_conformer),
    ("pretrain_peers", stage_pretrain_peers),
    ("hear", _stage("asit_hear.demo_stage", "stage_hear")),
    ("s3prl", _stage("upstream.s3prl_upstream.demo", "stage_s3prl")),
    ("leaderboard", _stage("benchmarks.demo_stage", "stage_leaderboard")),
]


def run_demo(ctx: DemoContext, stages: list[tuple[str, Stage]] | None = None) -> dict[str, Any]:
    # absolute from here on: stages hand paths to subprocesses that run in other folders (s3prl, heareval)
    ctx.out_dir = Path(ctx.out_dir).resolve()
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for name, stage in stages or STAGES:
        ctx.log(f"stage {name}")
        stage(ctx)
    ctx.report["seconds"] = round(time.time() - started, 1)
    summary = ctx.out_dir / "demo_summary.json"
    summary.write_text(json.dumps(ctx.report, indent=2, default=str))
    ctx.log(f"done in {ctx.report['seconds']:.0f} s; summary in {summary}")
    return ctx.report


__all__ = ["DemoContext", "STAGES", "run_demo"]
