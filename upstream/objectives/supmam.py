"""SupMAM, MAM-CLAP and SupMAM-CLAP (Xin, Peng, Lu, "Masked Audio Modeling with CLAP and Multi-Objective
Learning", [S3]), `objective.name: supmam`.

An AudioMAE: the ViT encodes only the visible patches of a randomly masked spectrogram (unstructured masking, ratio
γ), a decoder fills the masked positions with a mask token, a head predicts a target at every position.
- MAM-CLAP (`variant: mam_clap`): the targets are a frozen teacher's tokens T aligned to the patch grid; the loss is
  on visible *and* masked positions, each set averaged on its own (eq. 1). γ = 0.2.
- SupMAM (`variant: supmam`): AudioMAE's pixel reconstruction of the masked patches + a classifier on the mean of the
  visible encoder tokens, trained with the clip labels (eqs. 2, 3). γ = 0.4, λ_cls = 0.01.
- SupMAM-CLAP (`variant: supmam_clap`): the teacher targets + the classifier. γ = 0.2, λ_cls = 0.0001.
Total = L_target (or L_rec) + λ_cls · L_cls (eq. 3). Only the encoder is exported.

Paper facts: the ratios and weights above (§3.2), "a single transformer block with shifted local attention" as the
decoder of the CLAP variants (§3.2), h = one fully-connected layer + LayerNorm (§2.1), the classifier = average
pooling of the visible patch features + a two-layer MLP with BatchNorm and ReLU in between (§1, §2.2), CE(p_v/τ, y)
(eq. 2), L2 losses with separate visible / masked means (eq. 1).

CHOICEs (each with its source; the table in docs/pretraining.md, "SupMAM"):
- the encoder's positional embedding is a frozen 2-D sin-cos table (AudioMAE `pos_trainable=False`), written into the
  AudioViT's `pos_embed` (CLS row zero) so the exported encoder is a normal AudioViT; `pos_embed: learned` keeps the
  ViT's learned one.
- the mask is drawn in the data worker from the sample's seeded rng (exact resume); len_keep = int(N·(1 − γ)) (MAE).
- SupMAM's decoder (not stated): AudioMAE's, 16 local-attention blocks of 512; the CLAP variants' one block is shifted.
- h reads the decoder's output at all N positions (Linear(dec_dim → C_T) + LayerNorm), split into Y_v and Y_m.
- teacher targets are layer-normalised per token without affine (MaskFeat/data2vec) and the L2 loss is the MSE
  ("L2 loss functions"); `target_norm: l2` is CAE v2's variant: L2-normalised targets with a cosine loss
  (1 − cos per token), with the same visible / masked split.
- the pooled features are the final normalised encoder tokens of all visible patches, CLS excluded (SupMAE); hidden
  width 3072 (SupMAE `cls_hidden_mlp`); τ = 10 (SupMAE `--temperature`); CE on multi-label AudioSet is the softmax
  cross-entropy against y / Σy (λ = 0.01 comes from SupMAE's softmax CE); `cls.loss: bce_sum` is BCE summed over
  classes, mean over clips, on the same logits / τ.
- clips without any positive label have no target distribution for the soft CE: they are left out of L_cls (they
  still take part in the BatchNorm statistics and in L_target / L_rec); a batch with none labelled gives L_cls = 0.
  Under `bce_sum` they count as all-negative clips.
- pixel reconstruction as AudioMAE's AS-2M run: MSE on masked patches with `norm_pix_loss` (per-patch mean and
  unbiased variance, eps 1e-6).
- the teacher is frozen, in eval mode and run without gradient (not stated); it reads the waveform of the crop at the
  student's sample rate and computes its own features (the paper feeds it "the spectrogram X").
- `variant` defaults to `supmam` (the objective's name; no teacher file needed); explicit keys override a preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import from_dict
from ..encoders import AudioViT, EncoderConfig
from ..errors import AsitError
from ..frontend import FrontendConfig
from ..heads import init_linear_xavier
from ..health import feature_std, recon_vs_mean
from ..mae_decoder import DecoderConfig, MAEDecoder, gather_tokens, keep_mask, patchify, random_keep_ids, sincos_2d
from ..schedules import TrainingProgress
from ..teachers import Teacher, TeacherConfig, align_to_grid, load_teacher
from .base import DataNeeds, PretrainObjective

TARGETS = ("teacher", "pixels")
TARGET_NORMS = ("layernorm", "l2")
CLS_LOSSES = ("soft_ce", "bce_sum")
POS_EMBEDS = ("sincos_frozen", "learned")

# variant -> (mask_ratio, target, cls weight λ_cls, decoder depth). Ratios and weights: [S3 §3.2]; the one-block
# decoder of the CLAP variants: [S3 §3.2]; SupMAM's 16 blocks: AudioMAE's decoder (CHOICE, the paper is silent).
VARIANTS: dict[str, tuple[float, str, float, int] | None] = {
    "mam_clap": (0.2, "teacher", 0.0, 1),
    "supmam": (0.4, "pixels", 0.01, 16),
    "supmam_clap": (0.2, "teacher", 0.0001, 1),
    "custom": None,       # no preset: mask_ratio, target, cls.weight and decoder.depth must be given
}


@dataclass(frozen=True)
class ClsConfig:
    weight: float | None = None     # λ_cls; None: the variant's
    hidden: int = 3072              # SupMAE cls_hidden_mlp (CHOICE)
    temperature: float = 10.0       # τ: SupMAE --temperature (CHOICE; the paper gives none)
    loss: str = "soft_ce"           # soft_ce (softmax CE against y / Σy) | bce_sum
    num_classes: int = 527          # AudioSet


@dataclass(frozen=True)
class SupMAMConfig:
    variant: str = "supmam"         # mam_clap | supmam | supmam_clap | custom
    mask_ratio: float | None = None     # γ; None: the variant's
    target: str | None = None       # teacher | pixels; None: the variant's
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    target_norm: str = "layernorm"  # layernorm (MSE on LN-normalised teacher tokens) | l2 (cosine loss)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    norm_pix_loss: bool = True      # pixels target only (AudioMAE AS-2M script)
    cls: ClsConfig = field(default_factory=ClsConfig)
    pos_embed: str = "sincos_frozen"    # sincos_frozen (AudioMAE) | learned

    def resolved(self) -> "SupMAMConfig":
        """Fill the preset's values where no explicit key was given, then check everything."""
        if self.variant not in VARIANTS:
            raise AsitError(f"objective.variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        preset = VARIANTS[self.variant]
        if preset is None:
            missing = [name for name, value in (("objective.mask_ratio", self.mask_ratio),
                                                ("objective.target", self.target),
                                                ("objective.cls.weight", self.cls.weight),
                                                ("objective.decoder.depth", self.decoder.depth)) if value is None]
            if missing:
                raise AsitError(f"objective.variant custom has no preset; set {', '.join(missing)}")
            preset = (0.0, "", 0.0, 1)
        ratio, target, weight, depth = preset
        cfg = replace(
            self,
            mask_ratio=float(ratio if self.mask_ratio is None else self.mask_ratio),
            target=target if self.target is None else self.target,
            cls=replace(self.cls, weight=float(weight if self.cls.weight is None else self.cls.weight)),
            decoder=replace(self.decoder, depth=int(depth if self.decoder.depth is None else self.decoder.depth)))
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.target not in TARGETS:
            raise AsitError(f"objective.target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        ratio = self.mask_ratio
        if ratio is None or not 0.0 <= ratio < 1.0 or (self.target == "pixels" and ratio == 0.0):
            low = "(0" if self.target == "pixels" else "[0"
            raise AsitError(f"objective.mask_ratio must be in {low}, 1) for target {self.target}, got {ratio}")
        if self.target_norm not in TARGET_NORMS:
            raise AsitError(f"objective.target_norm must be one of {', '.join(TARGET_NORMS)}, "
                            f"got {self.target_norm!r}")
        if self.pos_embed not in POS_EMBEDS:
            raise AsitError(f"objective.pos_embed must be one of {', '.join(POS_EMBEDS)}, got {self.pos_embed!r}")
        self.decoder.check()
        cls = self.cls
        if cls.weight is None or cls.weight < 0:
            raise AsitError(f"objective.cls.weight must be >= 0, got {cls.weight}")
        if cls.loss not in CLS_LOSSES:
            raise AsitError(f"objective.cls.loss must be one of {', '.join(CLS_LOSSES)}, got {cls.loss!r}")
        if cls.temperature <= 0:
            raise AsitError(f"objective.cls.temperature must be positive, got {cls.temperature}")
        if cls.hidden < 1 or cls.num_classes < 1:
            raise AsitError(f"objective.cls.hidden and objective.cls.num_classes must be positive, got "
                            f"{cls.hidden} and {cls.num_classes}")
        if self.target == "pixels" and str(self.teacher.path):
            raise AsitError(f"objective.teacher.path is set ({self.teacher.path}) but objective.target is pixels "
                            f"(variant {self.variant}); remove it or use target: teacher")


@dataclass(frozen=True)
class RandomPatchMasking:
    """Data-worker transform: MAE's unstructured random masking, one draw per view from the sample's rng.

    Adds `ids_keep` [V, len_keep] (int64, sorted), the visible patch ids in time-major order."""

    mask_ratio: float
    patch_size: int

    def __call__(self, sample: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        views = sample["views"]
        num_views, _, frames, bins = views.shape
        if frames % self.patch_size or bins % self.patch_size:
            raise AsitError(f"crop of {frames} x {bins} is not a multiple of the patch size {self.patch_size}")
        tokens = (frames // self.patch_size) * (bins // self.patch_size)
        ids = np.stack([random_keep_ids(tokens, self.mask_ratio, rng) for _ in range(num_views)])
        return {"ids_keep": torch.from_numpy(ids)}


def split_means(errors: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token errors [B, N] -> (mean over visible tokens, mean over masked tokens), eq. (1)'s 1/l_v and 1/l_m.

    A set with no token contributes 0."""
    def mean(select: torch.Tensor) -> torch.Tensor:
        return (errors * select).sum() / select.sum().clamp_min(1)
    masked = masked.to(torch.bool)
    return mean(~masked), mean(masked)


def target_errors(pred: torch.Tensor, target: torch.Tensor, norm: str = "layernorm") -> torch.Tensor:
    """Per-token error [B, N] between predictions and raw teacher tokens [B, N, C].

    layernorm: MSE against LN(target) (no affine); l2: 1 − cos(pred, target)."""
    pred, target = pred.float(), target.float()
    if norm == "layernorm":
        target = F.layer_norm(target, target.shape[-1:], eps=1e-6)
        return (pred - target).pow(2).mean(-1)
    return 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-6)


def reconstruction_target(x: torch.Tensor, patch: int, norm_pix: bool = True) -> torch.Tensor:
    """AudioMAE's pixel targets [B, N, patch²] of x [B, 1, T, F]: per-patch normalised with `norm_pix` (mean and
    unbiased variance, eps 1e-6)."""
    target = patchify(x.float(), patch)
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    return target


def reconstruction_loss(pred: torch.Tensor, x: torch.Tensor, masked: torch.Tensor, patch: int,
                        norm_pix: bool = True, target: torch.Tensor | None = None) -> torch.Tensor:
    """AudioMAE's loss: MSE on the masked patches; pred [B, N, patch²], x [B, 1, T, F], masked [B, N]; `target`:
    `reconstruction_target(x, patch, norm_pix)` when the caller has it already."""
    if target is None:
        target = reconstruction_target(x, patch, norm_pix)
    errors = (pred.float() - target).pow(2).mean(-1)
    return split_means(errors, masked)[1]


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                        loss: str = "soft_ce") -> torch.Tensor:
    """Eq. (2), CE(p_v / τ, y). soft_ce: softmax CE against y / Σy over the clips with a positive label;
    bce_sum: BCE with logits summed over classes, mean over clips."""
    z = logits.float() / temperature
    labels = labels.float()
    if loss == "bce_sum":
        return F.binary_cross_entropy_with_logits(z, labels, reduction="none").sum(-1).mean()
    totals = labels.sum(-1, keepdim=True)
    soft = labels / totals.clamp_min(1e-12)            # rows without a positive label are all zero: loss 0
    per_clip = -(soft * F.log_softmax(z, dim=-1)).sum(-1)
    return per_clip.sum() / (totals > 0).sum().clamp_min(1)


class SupMAMObjective(PretrainObjective):
    name = "supmam"

    def __init__(self, config: SupMAMConfig, encoder: EncoderConfig, frontend: FrontendConfig | None = None,
                 teacher: Teacher | nn.Module | None = None) -> None:
        super().__init__()
        config = config.resolved()
        self.config = config
        encoder = encoder.resolved()
        self.frontend = frontend or FrontendConfig()
        if config.target == "teacher" and teacher is None:
            # first, so a missing or unreadable teacher fails before anything is built; in a forked RNG, so the
            # student's initialisation does not depend on whether (or which) teacher was loaded
            if not str(config.teacher.path):
                raise AsitError(f"objective.teacher.path is empty: variant {config.variant} (target teacher) "
                                f"distils a frozen teacher; give a local file or directory for adapter "
                                f"{config.teacher.adapter!r}")
            with torch.random.fork_rng(devices=[]):
                teacher = load_teacher(config.teacher, int(self.frontend.sample_rate))
        self.encoder = AudioViT(encoder)
        dim = int(encoder.embed_dim)  # type: ignore[arg-type]
        self.patch_size = int(encoder.patch_size)
        self.trained_grid = (encoder.trained_frames // encoder.patch_size, encoder.freq_patches)
        if config.pos_embed == "sincos_frozen":
            self._freeze_sincos_positions(dim)
        self.decoder = MAEDecoder(dim, config.decoder, self.trained_grid)
        dec_dim = config.decoder.dim
        self.teacher: nn.Module | None = None
        self.target_head: nn.Module | None = None
        self.pixel_head: nn.Module | None = None
        if config.target == "teacher":
            assert teacher is not None
            self.teacher = teacher
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.teacher.eval()
            self.target_dim = int(teacher.dim)
            self.target_head = nn.Sequential(nn.Linear(dec_dim, self.target_dim),
                                             nn.LayerNorm(self.target_dim, eps=1e-6))
            head: nn.Module = self.target_head
        else:
            self.pixel_head = nn.Linear(dec_dim, self.patch_size * self.patch_size)
            head = self.pixel_head
        self.classifier: nn.Module | None = None
        if config.cls.weight > 0:  # type: ignore[operator]
            self.classifier = nn.Sequential(nn.Linear(dim, config.cls.hidden), nn.BatchNorm1d(config.cls.hidden),
                                            nn.ReLU(inplace=True), nn.Linear(config.cls.hidden,
                                                                             config.cls.num_classes))
        init_linear_xavier(head, *([self.classifier] if self.classifier is not None else []))

    def _freeze_sincos_positions(self, dim: int) -> None:
        if dim % 4:
            raise AsitError(f"objective.pos_embed sincos_frozen needs encoder.embed_dim divisible by 4, got {dim}; "
                            "use objective.pos_embed: learned")
        pos = self.encoder.pos_embed
        with torch.no_grad():
            pos[:, :1].zero_()
            pos[:, 1:].copy_(sincos_2d(self.trained_grid, dim)[None].to(pos.dtype))
        pos.requires_grad_(False)

    @classmethod
    def from_config(cls, params: Mapping[str, Any], encoder: Any,
                    frontend: FrontendConfig | None = None) -> "SupMAMObjective":
        if not isinstance(encoder, EncoderConfig):
            raise AsitError(f"objective supmam trains a ViT (AudioMAE); encoder.arch is {encoder.arch!r}")
        return cls(from_dict(SupMAMConfig, params, "objective."), encoder, frontend)

    # -- the seam ------------------------------------------------------------------------------------------------
    def data_needs(self) -> DataNeeds:
        labels = self.classifier is not None
        return DataNeeds(num_views=1, labels=labels, num_classes=self.config.cls.num_classes if labels else None,
                         waves=self.config.target == "teacher")

    def view_transform(self) -> RandomPatchMasking:
        return RandomPatchMasking(float(self.config.mask_ratio), self.patch_size)  # type: ignore[arg-type]

    def train(self, mode: bool = True) -> "SupMAMObjective":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()   # frozen teacher: never in training mode (dropout, BatchNorm statistics)
        return self

    def export_encoder(self, which: str = "teacher") -> AudioViT:
        return self.encoder

    # -- forward pieces ----------------------------------------------------------------------------------------
    def encode_visible(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, F], ids [B, L] -> final encoder tokens [B, 1 + L, D] of the CLS and the visible patches."""
        tokens = self.encoder.embed(x)
        visible = gather_tokens(tokens[:, 1:], ids_keep)
        return self.encoder.forward_tokens(torch.cat([tokens[:, :1], visible], dim=1))

    def class_logits(self, latent: torch.Tensor) -> torch.Tensor:
        """p_v: the classifier on the mean of the visible patch tokens (CLS excluded)."""
        assert self.classifier is not None
        return self.classifier(latent[:, 1:].mean(dim=1))

    def teacher_targets(self, waves: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The teacher's tokens for the crops' waveforms [B, S], aligned to the student's grid: [B, Tp·Fp, C_T]."""
        assert self.teacher is not None
        with torch.no_grad():
            aligned = align_to_grid(self.teacher(waves), grid)
        n = grid[0] * grid[1]
        if aligned.ndim != 3 or aligned.shape[1] != n or aligned.shape[2] != self.target_dim:
            raise AsitError(f"teacher ({self.config.teacher.adapter}, {self.config.teacher.path}) gave targets of "
                            f"shape {tuple(aligned.shape)}; expected [B, {n}, {self.target_dim}]")
        return aligned.detach()

    def training_losses(self, batch: dict[str, torch.Tensor], progress: TrainingProgress) -> dict[str, torch.Tensor]:
        views = batch["views"]
        if views.ndim != 5 or views.shape[1] != 1:
            raise AsitError(f"objective supmam takes one view per clip (data.num_views: 1); views have shape "
                            f"{tuple(views.shape)}")
        x = views[:, 0]
        ids_keep = batch["ids_keep"]
        ids_keep = (ids_keep[:, 0] if ids_keep.ndim == 3 else ids_keep).to(device=x.device, dtype=torch.long)
        grid = self.encoder.grid(x.shape[2])
        masked = keep_mask(ids_keep, grid[0] * grid[1])

        latent = self.encode_visible(x, ids_keep)
        self.record_health(std_encoder=feature_std(latent[:, 1:]))        # rows: the visible patch tokens
        decoded = self.decoder(latent, ids_keep, grid)
        terms: dict[str, torch.Tensor] = {}
        if self.config.target == "pixels":
            assert self.pixel_head is not None
            pixels = self.pixel_head(decoded)
            target = reconstruction_target(x, self.patch_size, self.config.norm_pix_loss)
            main = reconstruction_loss(pixels, x, masked, self.patch_size, target=target)
            self.record_health(recon_vs_mean=recon_vs_mean(pixels, target, masked[..., None]))
            terms["recon"] = main
        else:
            assert self.target_head is not None
            if "waves" not in batch:
                raise AsitError("objective supmam with target teacher needs the crops' waveforms in the batch "
                                "(data_needs().waves)")
            waves = batch["waves"]
            waves = waves[:, 0] if waves.ndim == 3 else waves
            errors = target_errors(self.target_head(decoded), self.teacher_targets(waves, grid),
                                   self.config.target_norm)
            visible, hidden = split_means(errors, masked)
            main = visible + hidden
            terms.update(target=main, target_visible=visible, target_masked=hidden)
        total = main
        if self.classifier is not None:
            if "labels" not in batch:
                raise AsitError("objective supmam with cls.weight > 0 needs clip labels in the batch "
                                "(data.labels: true and a labelled manifest)")
            labels = batch["labels"]
            if labels.ndim != 2 or labels.shape[1] != self.config.cls.num_classes:
                raise AsitError(f"labels of shape {tuple(labels.shape)} do not match objective.cls.num_classes "
                                f"{self.config.cls.num_classes}")
            cls = classification_loss(self.class_logits(latent), labels, self.config.cls.temperature,
                                      self.config.cls.loss)
            terms["cls"] = cls
            total = total + float(self.config.cls.weight) * cls  # type: ignore[arg-type]
        return {"loss": total, **terms}


__all__ = ["ClsConfig", "RandomPatchMasking", "SupMAMConfig", "SupMAMObjective", "VARIANTS", "classification_loss",
           "reconstruction_loss", "reconstruction_target", "split_means", "target_errors"]
