"""wav2vec 2.0 on log-mel with a conformer context encoder (Srivastava et al., "Conformer-based self-supervised
learning for non-speech audio tasks", §2.2–2.3), `objective.name: wav2vec2_conformer`.

Per clip: fbank -> time stacking + linear = Z (the feature encoder) -> 30 % of the steps of Z replaced by a learned
mask embedding, in spans -> context encoder (linear, conformer blocks, final linear to the target space) -> for each
masked step t, the context vector c_t must pick the target of step t among K + 1 candidates: the true one and K
distractors drawn from the other masked steps of the same clip (eq. (1), cosine similarity).

Paper values: 30 % masked (§2.3), K = 100 (§2.3), cosine similarity (eq. 1), distractors from masked steps of the same
clip (§2.2). Our choices, from wav2vec 2.0 (Baevski et al.), which the paper says it follows ("similar to the
original wav2vec 2.0"): targets are quantised by a Gumbel-softmax product quantiser (G = 2 codebooks x V = 320
entries, temperature max(2 · 0.999995^step, 0.5)), logits are cosine / 0.1, a diversity loss (weight 0.1) and a
feature penalty (mean squared feature-encoder output, weight 10) are added; spans are 3 steps long (240 ms; the
paper gives none) and exactly 30 % of the steps are masked. `targets: continuous` uses the unmasked, layer-normalised
Z itself as the target (no quantiser), the reading of the paper's text that never mentions a codebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..config import from_dict
from ..contrastive import contrastive_logits, contrastive_loss, gather_steps, sample_distractors
from ..encoders import ConformerConfig, ConformerEncoder
from ..errors import AsitError
from ..frontend import FrontendConfig
from ..health import feature_std
from ..quantizer import GumbelProductQuantizer, gumbel_temperature
from ..schedules import TrainingProgress
from ..span_mask import SpanMaskConfig, span_mask
from .base import PretrainObjective

TARGETS = ("quantized", "continuous")


@dataclass(frozen=True)
class QuantizerConfig:
    groups: int = 2                 # G (wav2vec 2.0)
    entries: int = 320              # V (wav2vec 2.0)
    codebook_dim: int = 256         # concatenated entry size (wav2vec 2.0 base)
    temp_start: float = 2.0         # Gumbel temperature max(start · decay^step, end) (wav2vec 2.0)
    temp_end: float = 0.5
    temp_decay: float = 0.999995


@dataclass(frozen=True)
class Wav2Vec2ConformerConfig:
    mask: SpanMaskConfig = field(default_factory=SpanMaskConfig)
    num_negatives: int = 100        # K (paper §2.3)
    logit_temp: float = 0.1         # cosine / 0.1 (wav2vec 2.0; the paper prints no temperature)
    targets: str = "quantized"      # quantized | continuous
    final_dim: int = 256            # the space c_t and targets meet in (the context encoder's final linear)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    diversity_weight: float = 0.1   # alpha (wav2vec 2.0)
    feature_penalty_weight: float = 10.0   # (wav2vec 2.0's weight for its feature penalty)

    def check(self) -> None:
        self.mask.check()
        if self.targets not in TARGETS:
            raise AsitError(f"objective.targets must be one of {', '.join(TARGETS)}, got {self.targets!r}")
        if self.num_negatives < 1:
            raise AsitError(f"objective.num_negatives must be at least 1, got {self.num_negatives}")
        if self.logit_temp <= 0:
            raise AsitError(f"objective.logit_temp must be positive, got {self.logit_temp}")


class SpanMaskTransform:
    """Per-sample span mask over the encoder steps of a crop, drawn in the data worker from the sample's rng."""

    def __init__(self, config: SpanMaskConfig, frames_per_step: int) -> None:
        self.config, self.frames_per_step = config, frames_per_step

    def __call__(self, sample: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        views = sample["views"]
        steps = views.shape[-2] // self.frames_per_step
        return {"step_mask": torch.from_numpy(np.stack([span_mask(steps, self.config, rng)
                                                         for _ in range(views.shape[0])]))}


class Wav2Vec2ConformerObjective(PretrainObjective):
    name = "wav2vec2_conformer"

    def __init__(self, config: Wav2Vec2ConformerConfig, encoder: ConformerConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.encoder = ConformerEncoder(encoder)
        latent = self.encoder.config.latent_dim
        self.mask_embedding = nn.Parameter(torch.empty(latent).uniform_())
        self.final_proj = nn.Linear(self.encoder.embed_dim, config.final_dim)
        self.quantizer: GumbelProductQuantizer | None = None
        self.target_proj: nn.Linear | None = None
        if config.targets == "quantized":
            q = config.quantizer
            self.quantizer = GumbelProductQuantizer(latent, groups=q.groups, entries=q.entries,
                                                    codebook_dim=q.codebook_dim, output_dim=config.final_dim)
        elif latent != config.final_dim:
            self.target_proj = nn.Linear(latent, config.final_dim)

    @classmethod
    def from_config(cls, params: Mapping[str, Any], encoder: Any,
                    frontend: FrontendConfig | None = None) -> "Wav2Vec2ConformerObjective":
        if not isinstance(encoder, ConformerConfig):
            raise AsitError(f"objective wav2vec2_conformer trains a conformer; set encoder.arch: conformer "
                            f"(got {encoder.arch!r})")
        return cls(from_dict(Wav2Vec2ConformerConfig, params, "objective."), encoder)

    def view_transform(self) -> SpanMaskTransform:
        return SpanMaskTransform(self.config.mask, self.encoder.frames_per_step)

    def gumbel_temperature(self, progress: TrainingProgress) -> float:
        q = self.config.quantizer
        return gumbel_temperature(progress.step, q.temp_start, q.temp_end, q.temp_decay)

    def training_losses(self, batch: dict[str, torch.Tensor], progress: TrainingProgress) -> dict[str, torch.Tensor]:
        fbank = batch["views"][:, 0, 0]                                    # one view: [B, T, F]
        mask = batch["step_mask"][:, 0].to(fbank.device)                   # [B, S] bool
        raw = self.encoder.raw_features(fbank)                             # [B, S, latent]
        penalty = raw.float().pow(2).mean()
        latent = self.encoder.feature_norm(raw)
        unmasked = latent                                                  # targets: before masking, never after
        masked = torch.where(mask[..., None], self.mask_embedding.to(latent.dtype), latent)
        encoded = self.encoder.context(masked)[-1]                         # [B, S, D]: the exported encoder's output
        context = self.final_proj(encoded)                                 # [B, S, final]
        self.record_health(std_encoder=feature_std(encoded))               # rows: every step of the batch

        terms: dict[str, torch.Tensor] = {}
        if self.quantizer is not None:
            quantized = self.quantizer(unmasked, self.gumbel_temperature(progress), mask=mask)
            targets = quantized.quantized
            terms["diversity"] = quantized.diversity_loss
            perplexity = quantized.prob_perplexity.detach()
        else:
            targets = self.target_proj(unmasked) if self.target_proj is not None else unmasked
            perplexity = None
        positions = _masked_positions(mask)                                # [B, M]
        negatives = sample_distractors(mask, self.config.num_negatives)     # [B, M, K]
        logits = contrastive_logits(gather_steps(context, positions), gather_steps(targets, positions),
                                    gather_steps(targets, negatives), self.config.logit_temp)
        terms["contrastive"] = contrastive_loss(logits)
        terms["feature_penalty"] = penalty
        total = (terms["contrastive"] + self.config.feature_penalty_weight * penalty
                 + self.config.diversity_weight * terms.get("diversity", torch.zeros((), device=penalty.device)))
        out = {"loss": total, **terms}
        with torch.no_grad():
            out["accuracy"] = (logits.argmax(-1) == 0).float().mean()
            if perplexity is not None:
                out["prob_perplexity"] = perplexity
        return out

    def export_encoder(self, which: str = "teacher") -> ConformerEncoder:
        return self.encoder

    def metrics(self, progress: TrainingProgress) -> dict[str, float]:
        return {"gumbel_temp": self.gumbel_temperature(progress)} if self.quantizer is not None else {}


def _masked_positions(mask: torch.Tensor) -> torch.Tensor:
    """bool [B, S] with M masked steps per row -> their indices [B, M] in time order."""
    counts = mask.sum(dim=1)
    if bool((counts != counts[0]).any()):
        raise AsitError(f"every clip of a batch must have the same number of masked steps, got {counts.tolist()}")
    return mask.nonzero()[:, 1].reshape(mask.shape[0], int(counts[0]))
