"""ASiT (Atito et al.): group masked model learning + local (data-token) and global (CLS) self-distillation from
an EMA teacher. Defaults follow the paper; the official code's deviations are available through the config
(`loss_weights.recon: 2`, `warmup_teacher_temp_epochs: 30`, `masking.other_clip_prob: 0.3`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch

from ..config import from_dict
from ..encoders import AudioViT, EncoderConfig
from ..errors import AsitError
from ..frontend import FrontendConfig
from ..heads import ProjectionHead, ReconstructionHead
from ..health import feature_std, mean_entropy, recon_vs_mean
from ..losses import CenteredDistillation, global_loss, local_loss, masked_l1
from ..masking import GMMLViewMasker, MaskingConfig, apply_masks, token_mask
from ..schedules import TrainingProgress, cosine, linear_warmup
from .base import DataNeeds, PretrainObjective, ViewTransform

LOSS_TERMS = ("recon", "local", "global")


@dataclass(frozen=True)
class ASiTConfig:
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    out_dim: int = 8192
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    norm_last_layer: bool = True
    recon_hidden_dim: int = 2048
    recon_bottleneck_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    teacher_momentum: float = 0.996
    teacher_momentum_end: float = 1.0
    freeze_last_layer_epochs: int = 1
    loss_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in LOSS_TERMS})
    recon_on: str = "masked"   # L1 over masked pixels (paper eq. 1) | all pixels (Table III's unmasked autoencoder)

    def check(self) -> None:
        self.masking.check()
        if self.recon_on not in ("masked", "all"):
            raise AsitError(f"objective.recon_on must be masked or all, got {self.recon_on!r}")
        unknown = set(self.loss_weights) - set(LOSS_TERMS)
        if unknown:
            raise AsitError(f"objective.loss_weights has unknown term(s) {sorted(unknown)}; terms: {LOSS_TERMS}")


class ASiTObjective(PretrainObjective):
    name = "asit"
    encoder_prefixes = {"teacher": "teacher.", "student": "student."}

    def __init__(self, config: ASiTConfig, encoder: EncoderConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.weights = {t: float(config.loss_weights.get(t, 1.0)) for t in LOSS_TERMS}
        encoder = encoder.resolved()
        self.student = AudioViT(encoder)
        self.teacher = AudioViT(replace(encoder, drop_path_rate=0.0))
        dim = int(encoder.embed_dim)  # type: ignore[arg-type]
        head_args = dict(out_dim=config.out_dim, hidden_dim=config.head_hidden_dim,
                         bottleneck_dim=config.head_bottleneck_dim, norm_last_layer=config.norm_last_layer)
        self.student_head = ProjectionHead(dim, **head_args)
        self.teacher_head = ProjectionHead(dim, **head_args)
        self.recon_head = ReconstructionHead(dim, patch_size=encoder.patch_size, hidden_dim=config.recon_hidden_dim,
                                             bottleneck_dim=config.recon_bottleneck_dim)
        self.distill_cls = CenteredDistillation(config.out_dim, config.student_temp, config.center_momentum)
        self.distill_data = CenteredDistillation(config.out_dim, config.student_temp, config.center_momentum)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        for p in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)

    @classmethod
    def from_config(cls, params: Mapping[str, Any], encoder: Any,
                    frontend: FrontendConfig | None = None) -> "ASiTObjective":
        if not isinstance(encoder, EncoderConfig):
            raise AsitError(f"objective asit trains a ViT; encoder.arch is {encoder.arch!r}")
        return cls(from_dict(ASiTConfig, params, "objective."), encoder)

    def data_needs(self) -> DataNeeds:
        return DataNeeds(num_views=2)   # the global loss matches the CLS of one view to the other's

    def view_transform(self) -> ViewTransform:
        return GMMLViewMasker(self.config.masking, int(self.student.config.patch_size))

    def teacher_temp(self, progress: TrainingProgress) -> float:
        cfg = self.config
        warmup = cfg.warmup_teacher_temp_epochs * progress.steps_per_epoch
        return linear_warmup(cfg.warmup_teacher_temp, cfg.teacher_temp, progress.step, warmup)

    def teacher_momentum(self, progress: TrainingProgress) -> float:
        cfg = self.config
        return cosine(cfg.teacher_momentum, cfg.teacher_momentum_end, progress.step, progress.total_steps)

    def training_losses(self, batch: dict[str, torch.Tensor], progress: TrainingProgress) -> dict[str, torch.Tensor]:
        views, masks = batch["views"], batch["masks"]
        b, v, _, t, f = views.shape
        patch = self.student.config.patch_size
        grid = (t // patch, f // patch)
        corrupted = apply_masks(views, masks, batch["use_other_clip"])
        manipulated = token_mask(masks, patch).flatten(0, 1)             # [B·V, N] data tokens the local loss uses

        student_tokens = self.student.forward_features(corrupted.flatten(0, 1))
        # the student head sees only the rows the losses read: every CLS, then the manipulated data tokens (the
        # local loss weights the others by zero, so their logits would cost head time and change nothing)
        student_logits = self.student_head(torch.cat([student_tokens[:, 0], student_tokens[:, 1:][manipulated]]))
        with torch.inference_mode():   # no autograd state at all; the teacher learns only through the EMA
            teacher_tokens = self.teacher.forward_features(views.flatten(0, 1))
            teacher_logits = self.teacher_head(teacher_tokens)

        reconstruction = self.recon_head(student_tokens[:, 1:], grid)
        recon_mask = (masks if self.config.recon_on == "masked" else torch.ones_like(masks)).flatten(0, 1)[:, None]
        recon = masked_l1(reconstruction.float(), views.flatten(0, 1).float(), recon_mask)

        k = student_logits.shape[-1]
        temp = self.teacher_temp(progress)
        # computed once, outside inference mode (the losses save them for backward), and reused by the health log
        cls_probs = self.distill_cls.teacher_probs(teacher_logits[:, 0], temp)
        local_probs = self.distill_data.teacher_probs(teacher_logits[:, 1:][manipulated], temp)
        local = local_loss(self.distill_data, student_logits[b * v:], local_probs)
        global_ = global_loss(self.distill_cls, student_logits[:b * v].reshape(b, v, k), cls_probs.reshape(b, v, k))
        # before the center update: the teacher distributions the losses above used
        self._record_health(student_tokens, teacher_tokens, cls_probs, local_probs, reconstruction, views,
                            recon_mask)
        self.distill_cls.update_center(teacher_logits[:, 0])
        self.distill_data.update_center(teacher_logits[:, 1:])

        terms = {"recon": recon, "local": local, "global": global_}
        total = sum(self.weights[name] * value for name, value in terms.items())
        # logged as train/loss_<term>: a bare train/global would read as Lightning's train/global_step column
        return {"loss": total, **{f"loss_{name}": value for name, value in terms.items()}}

    @torch.no_grad()
    def _record_health(self, student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, cls_probs: torch.Tensor,
                       local_probs: torch.Tensor, reconstruction: torch.Tensor, views: torch.Tensor,
                       recon_mask: torch.Tensor) -> None:
        """Collapse and reconstruction signals (upstream.health) from this step's tensors: the entropies of the
        teacher distributions the losses used (its centred sharpened softmax, on every CLS and on the manipulated
        data tokens), the center norms, the spread of the backbone CLS of student (masked views) and teacher (clean
        views), and the reconstruction against each view's mean."""
        log_k = math.log(cls_probs.shape[-1])
        cls_entropy = mean_entropy(cls_probs)
        local_entropy = mean_entropy(local_probs)
        self.record_health(
            teacher_entropy_cls=cls_entropy, teacher_entropy_cls_ratio=cls_entropy / log_k,
            teacher_entropy_local=local_entropy, teacher_entropy_local_ratio=local_entropy / log_k,
            center_norm_cls=self.distill_cls.center.norm(), center_norm_local=self.distill_data.center.norm(),
            std_student=feature_std(student_tokens[:, 0]), std_teacher=feature_std(teacher_tokens[:, 0]),
            recon_vs_mean=recon_vs_mean(reconstruction, views.flatten(0, 1), recon_mask))

    def after_backward(self, progress: TrainingProgress) -> None:
        if progress.epoch < self.config.freeze_last_layer_epochs:
            for p in self.student_head.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def after_optimizer_step(self, progress: TrainingProgress) -> None:
        m = self.teacher_momentum(progress)
        for student, teacher in ((self.student, self.teacher), (self.student_head, self.teacher_head)):
            s_params = list(student.parameters())
            t_params = list(teacher.parameters())
            torch._foreach_mul_(t_params, m)
            torch._foreach_add_(t_params, s_params, alpha=1.0 - m)

    def export_encoder(self, which: str = "teacher") -> AudioViT:
        return self.teacher if which == "teacher" else self.student

    def metrics(self, progress: TrainingProgress) -> dict[str, float]:
        return {"teacher_momentum": self.teacher_momentum(progress), "teacher_temp": self.teacher_temp(progress)}
