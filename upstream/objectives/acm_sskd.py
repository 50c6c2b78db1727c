"""ACM-SSKD's Multi-SSL pretraining (Gong et al., "Improving Audio Classification Method by Combining
Self-Supervision with Knowledge Distillation", Electronics 2024, 13, 52, §3, Alg A1).

One network, the Audio Feature Transformer (AFT, a ViT), sees three inputs of the same crop:
- raw: the unmasked spectrogram; its features are the targets (CHOICE: an internal teacher with stop-gradient, run
  in eval mode without drop path; `raw_grad: true` lets gradients through instead);
- intra: the spectrogram with time / frequency / joint masks inside at most half of its patches (`hog_masks`);
- inter: 75% of the patches dropped with the HOG prior of formula (1); the visible patches go through a small MAE
  encoder, whose output, with a learned mask token at the masked positions, the AFT's positional embedding and its
  CLS token, goes through the AFT's blocks ("AFT(MAE(x_inter))").
Per token, a projection MLP g (paper: (768, 1536), (1536, 768)) gives the features f and a linear pixel head r
the patch's pixels. Losses against the raw pass (formulas (2)–(10)), per masked branch x ∈ {intra, inter}:
    recon_x    = Σ_{p∈M_x} w_p · mean_pixels (r(h_x)_p − x_raw,p)² / |M_x|,  w_p = exp(−z_p²)       (2)
    mse_x      = mean (f_x − sg f_raw)²                                                              (4)
    kl_x       = mean_tokens KL(softmax(sg f_raw / T) ‖ softmax(f_x / T))                           (5)
    contrast_x = InfoNCE(AVG f_x, AVG sg f_raw), cosine / τ, negatives = the global batch            (8), (9)
    loss       = α Σ_x (recon_x + mse_x) + β Σ_x kl_x + c Σ_x contrast_x                              (10)
The knowledge-distillation stage (§3.4) is supervised finetuning, not part of this objective. CHOICES beyond the
paper are marked CHOICE where they are made and listed in docs/pretraining.md ("ACM-SSKD").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from ..config import from_dict
from ..encoders import AudioViT, EncoderConfig
from ..errors import AsitError
from ..frontend import FrontendConfig
from ..heads import init_linear_xavier
from ..health import feature_std, recon_vs_mean
from ..hog_masks import hog_patch_stats, hog_weights, hog_zscores, inter_patch_mask, intra_patch_mask
from ..mae_decoder import gather_tokens, patchify, sincos_2d, unshuffle
from ..masking import token_mask
from ..schedules import TrainingProgress
from .base import DataNeeds, PretrainObjective, ViewTransform

BRANCHES = ("intra", "inter")
LOSS_TERMS = tuple(f"{kind}_{branch}" for branch in BRANCHES for kind in ("recon", "mse", "kl", "contrast"))
FILLS = ("zeros", "clip_mean")
RECON_ON = ("masked", "all")


# -- config --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModeProbs:
    """Probabilities of the intra-patch mask modes (paper §4.1: 30% time, 30% frequency, 40% joint)."""

    time: float = 0.3
    freq: float = 0.3
    joint: float = 0.4

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.time, self.freq, self.joint)


@dataclass(frozen=True)
class IntraConfig:
    max_patch_ratio: float = 0.5      # paper: masked patches "not exceed 50%"
    mode_probs: ModeProbs = field(default_factory=ModeProbs)
    max_band: int = 4                 # pixels; paper: "does not exceed 25% of each spectrogram block" (16 px)
    fill: str = "zeros"               # CHOICE: masked pixels become 0, the normalised dataset mean (Mockingjay)

    def check(self, patch: int) -> None:
        key = "objective.intra."
        if not 0.0 < self.max_patch_ratio <= 1.0:
            raise AsitError(f"{key}max_patch_ratio must be in (0, 1], got {self.max_patch_ratio}")
        probs = self.mode_probs.as_tuple()
        if min(probs) < 0.0 or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise AsitError(f"{key}mode_probs must be non-negative and sum to 1, got time {probs[0]}, "
                            f"freq {probs[1]}, joint {probs[2]}")
        if not 1 <= self.max_band <= patch:
            raise AsitError(f"{key}max_band must be in [1, {patch}] (the patch size), got {self.max_band}")
        if self.fill not in FILLS:
            raise AsitError(f"{key}fill must be one of {', '.join(FILLS)}, got {self.fill!r}")


@dataclass(frozen=True)
class InterConfig:
    mask_ratio: float = 0.75          # paper, Table 3
    hog_mask_sign: int = 1            # +1 formula (1) literally; -1 the other reading; 0 uniform (MAE)
    mae_dim: int = 512                # CHOICE: 1 block of 512 dims makes the paper's ≈92M (App. A)
    mae_depth: int = 1
    mae_heads: int = 16

    def check(self) -> None:
        key = "objective.inter."
        if not 0.0 < self.mask_ratio < 1.0:
            raise AsitError(f"{key}mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.hog_mask_sign not in (-1, 0, 1):
            raise AsitError(f"{key}hog_mask_sign must be 1, -1 or 0, got {self.hog_mask_sign}")
        if self.mae_depth < 1:
            raise AsitError(f"{key}mae_depth must be >= 1, got {self.mae_depth}")
        if self.mae_heads < 1 or self.mae_dim % self.mae_heads:
            raise AsitError(f"{key}mae_dim {self.mae_dim} must be divisible by mae_heads {self.mae_heads}")
        if self.mae_dim < 4 or self.mae_dim % 4:
            raise AsitError(f"{key}mae_dim must be a positive multiple of 4 (2-D sin-cos positions), "
                            f"got {self.mae_dim}")


@dataclass(frozen=True)
class LossWeights:
    """Formula (10): α (restore + mse) + β KL + contrast. The paper gives no values; CHOICE: all 1 ("equal
    weights")."""

    alpha: float = 1.0
    beta: float = 1.0
    contrast: float = 1.0

    def check(self) -> None:
        for name in ("alpha", "beta", "contrast"):
            if getattr(self, name) < 0.0:
                raise AsitError(f"objective.loss_weights.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class ACMSSKDConfig:
    intra: IntraConfig = field(default_factory=IntraConfig)
    inter: InterConfig = field(default_factory=InterConfig)
    hog_weight: bool = True           # formula (2)'s weight exp(-z²); false: weight 1 (Tables 1 and 4, "+HOG Weight")
    proj_hidden_dim: int = 1536       # paper: (768, 1536), (1536, 768)
    kl_temp: float = 1.0              # CHOICE: plain softmax
    contrast_temp: float = 0.1        # CHOICE: SimCLR's τ (the paper gives none)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    raw_grad: bool = False            # CHOICE: the raw pass is a stop-gradient target
    branches: tuple[str, ...] = BRANCHES   # Table 6 ablations: [intra], [inter]
    recon_on: str = "masked"          # CHOICE: masked patches (M = their count); "all": every patch

    def check(self, patch: int) -> None:
        self.intra.check(patch)
        self.inter.check()
        self.loss_weights.check()
        if self.proj_hidden_dim < 1:
            raise AsitError(f"objective.proj_hidden_dim must be >= 1, got {self.proj_hidden_dim}")
        if self.kl_temp <= 0.0:
            raise AsitError(f"objective.kl_temp must be > 0, got {self.kl_temp}")
        if self.contrast_temp <= 0.0:
            raise AsitError(f"objective.contrast_temp must be > 0, got {self.contrast_temp}")
        unknown = [b for b in self.branches if b not in BRANCHES]
        if unknown or not self.branches or len(set(self.branches)) != len(self.branches):
            raise AsitError(f"objective.branches must be a non-empty list of distinct {', '.join(BRANCHES)}, "
                            f"got {list(self.branches)}")
        if self.recon_on not in RECON_ON:
            raise AsitError(f"objective.recon_on must be one of {', '.join(RECON_ON)}, got {self.recon_on!r}")


# -- data-worker transform -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ACMSSKDMasker:
    """Per sample (in data workers, all randomness from `rng`): for each view [1, T, F],
    `hog_z` [N] float32 (formula (1)/(2)'s z_p), `intra_mask` [T, F] bool (pixels), `inter_mask` [N] bool
    (patches, exactly round(mask_ratio·N) True), stacked over the V views. Masks of switched-off branches are
    not drawn."""

    intra: IntraConfig
    inter: InterConfig
    patch: int
    branches: tuple[str, ...] = BRANCHES

    def __call__(self, sample: Mapping[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        views = sample["views"]
        if views.ndim != 4 or views.shape[1] != 1:
            raise AsitError(f"acm_sskd expects views [V, 1, T, F], got {tuple(views.shape)}")
        _, _, height, width = views.shape
        zs, intra, inter = [], [], []
        for view in views[:, 0]:
            z = hog_zscores(hog_patch_stats(view, self.patch))
            zs.append(z.astype(np.float32))
            if "intra" in self.branches:
                intra.append(intra_patch_mask(height, width, self.patch, rng, self.intra.max_patch_ratio,
                                              self.intra.mode_probs.as_tuple(), self.intra.max_band).pixels)
            if "inter" in self.branches:
                inter.append(inter_patch_mask(z, self.inter.mask_ratio, self.inter.hog_mask_sign, rng))
        out = {"hog_z": torch.from_numpy(np.stack(zs))}
        if intra:
            out["intra_mask"] = torch.from_numpy(np.stack(intra))
        if inter:
            out["inter_mask"] = torch.from_numpy(np.stack(inter))
        return out


# -- losses (pure functions, exposed for tests) --------------------------------------------------------------------
def weighted_patch_mse(prediction: torch.Tensor, target: torch.Tensor, patches: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Formula (2): (1/M) Σ_{p ∈ M} w_p · mean over the patch's pixels of (pred − gt)², over the whole batch.

    prediction/target [B, N, P²]; patches [B, N] bool (the M patches); weights [B, N] (None: 1). CHOICE: the
    mean over pixels instead of the sum (a factor P² that α absorbs); M counted over the batch.
    """
    per_patch = (prediction.float() - target.float()).pow(2).mean(dim=-1)
    select = patches.to(per_patch.dtype)
    if weights is not None:
        per_patch = per_patch * weights.to(per_patch.dtype)
    return (per_patch * select).sum() / select.sum().clamp(min=1.0)


def feature_mse(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Formula (4): mean over tokens and channels of (f_pre − f_raw)²."""
    return (features.float() - target.float()).pow(2).mean()


def feature_kl(features: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Formula (5) with its missing log restored (CHOICE): mean over tokens of Σ_d P_d (log P_d − log Q_d),
    P = softmax(f_raw / T), Q = softmax(f_pre / T) over the channels d."""
    log_p = torch.log_softmax(target.float() / temperature, dim=-1)
    log_q = torch.log_softmax(features.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()


def gather_rows(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather [B, D] across processes when torch.distributed runs with world size > 1 (equal B per process).
    Returns (rows of every rank in rank order, this rank's offset). This rank's rows keep their autograd graph."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    buffers = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(buffers, local.detach().contiguous())
    buffers[rank] = local
    return torch.cat(buffers, dim=0), rank * local.shape[0]


def info_nce(prediction: torch.Tensor, target: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Formulas (8)–(9) as a loss (CHOICE: the negative of the printed log-likelihood):
    −(1/B) Σ_b log softmax_k(cos(pre_b, y_k) / τ)[positive], where k runs over the targets of the whole global
    batch (all-gathered across processes) and the positive of local row b is global row rank·B + b."""
    targets, offset = gather_rows(target.float())
    logits = F.normalize(prediction.float(), dim=-1) @ F.normalize(targets, dim=-1).T / temperature
    labels = torch.arange(prediction.shape[0], device=prediction.device) + offset
    return F.cross_entropy(logits, labels)


# -- the MAE module of the inter-patch branch ----------------------------------------------------------------------
class MAEModule(nn.Module):
    """"AFT(MAE(x_inter))" (§3.2, "inspiration from … Image MAE"). CHOICE (sized to the ≈92M of App. A): a
    Linear patch embedding of its own (patch² → mae_dim), fixed 2-D sin-cos positions, `mae_depth` timm Blocks over
    the visible patches only, LayerNorm, Linear mae_dim → D; then a learned mask token at the masked positions. The
    caller adds the AFT's positional embedding and CLS and runs the AFT's blocks."""

    def __init__(self, patch: int, dim: int, config: InterConfig) -> None:
        super().__init__()
        self.mae_dim = config.mae_dim
        self.patch_embed = nn.Linear(patch * patch, config.mae_dim)
        self.blocks = nn.ModuleList(
            Block(config.mae_dim, config.mae_heads, mlp_ratio=4.0, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6)) for _ in range(config.mae_depth))
        self.norm = nn.LayerNorm(config.mae_dim, eps=1e-6)
        self.out = nn.Linear(config.mae_dim, dim)
        # 1-D, so the optimizer's rule (ndim <= 1) exempts it from weight decay like the CLS token
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        init_linear_xavier(self)

    def forward(self, patches: torch.Tensor, masked: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """patches [B, N, P²], masked [B, N] bool (the same count per row) -> [B, N, D] tokens."""
        n = patches.shape[1]
        counts = masked.sum(dim=1)
        if bool((counts != counts[0]).any()):
            raise AsitError(f"inter-patch masks must mask the same number of patches in every clip of a batch, got "
                            f"{sorted(set(counts.tolist()))}")
        order = torch.argsort(masked.to(torch.int32), dim=1, stable=True)    # visible first, in position order
        visible = n - int(counts[0])
        keep = order[:, :visible]
        pos = sincos_2d(grid, self.mae_dim).to(device=patches.device, dtype=patches.dtype)
        x = self.patch_embed(gather_tokens(patches, keep)) + pos[keep]
        for block in self.blocks:
            x = block(x)
        return unshuffle(self.out(self.norm(x)), keep, n, self.mask_token)


# -- the objective -------------------------------------------------------------------------------------------------
class ACMSSKDObjective(PretrainObjective):
    name = "acm_sskd"

    def __init__(self, config: ACMSSKDConfig, encoder: EncoderConfig) -> None:
        super().__init__()
        encoder = encoder.resolved()
        config.check(encoder.patch_size)
        self.config = config
        self.patch = encoder.patch_size
        dim = int(encoder.embed_dim)  # type: ignore[arg-type]
        self.encoder = AudioViT(encoder)                                              # the AFT
        self.projector = nn.Sequential(nn.Linear(dim, config.proj_hidden_dim), nn.GELU(),
                                       nn.Linear(config.proj_hidden_dim, dim))       # g
        self.pixel_head = nn.Linear(dim, self.patch * self.patch)                    # r (CHOICE: MAE decoder_pred)
        self.mae = MAEModule(self.patch, dim, config.inter) if "inter" in config.branches else None
        init_linear_xavier(self.projector, self.pixel_head)   # CHOICE: MAE's init (features of order 1)

    @classmethod
    def from_config(cls, params: Mapping[str, Any], encoder: Any,
                    frontend: FrontendConfig | None = None) -> "ACMSSKDObjective":
        if not isinstance(encoder, EncoderConfig):
            raise AsitError(f"objective acm_sskd trains a ViT; encoder.arch is {getattr(encoder, 'arch', encoder)!r}")
        return cls(from_dict(ACMSSKDConfig, params, "objective."), encoder)

    def data_needs(self) -> DataNeeds:
        return DataNeeds(num_views=1)

    def view_transform(self) -> ViewTransform:
        return ACMSSKDMasker(self.config.intra, self.config.inter, self.patch, tuple(self.config.branches))

    # -- passes ----------------------------------------------------------------------------------------------
    def raw_pass(self, x: torch.Tensor) -> torch.Tensor:
        """Final patch tokens of the unmasked input [B, N, D]: the fitting target. Without `raw_grad`: no
        gradient, the AFT in eval mode (no drop path), its train mode restored afterwards."""
        if self.config.raw_grad:
            return self.encoder.forward_features(x)[:, 1:]
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            with torch.no_grad():
                return self.encoder.forward_features(x)[:, 1:]
        finally:
            self.encoder.train(was_training)

    def inter_tokens(self, x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """AFT(MAE(x_inter)): final patch tokens [B, N, D]."""
        assert self.mae is not None
        grid = self.encoder.grid(x.shape[2])
        self.encoder.check_input(x)
        tokens = self.mae(patchify(x, self.patch), masked, grid)
        enc = self.encoder
        tokens = enc.norm_pre(enc.patch_drop(enc._pos_embed(tokens.reshape(x.shape[0], *grid, -1))))
        return enc.forward_tokens(tokens)[:, 1:]

    def training_losses(self, batch: dict[str, torch.Tensor], progress: TrainingProgress) -> dict[str, torch.Tensor]:
        cfg = self.config
        views = batch["views"]
        if views.ndim != 5 or views.shape[1] != 1:
            raise AsitError(f"acm_sskd takes one view per clip (data.num_views: 1); views are {tuple(views.shape)}")
        x = views[:, 0]                                                               # [B, 1, T, F]
        target_pixels = patchify(x, self.patch)
        weights = hog_weights(batch["hog_z"][:, 0]) if cfg.hog_weight else None
        with torch.set_grad_enabled(cfg.raw_grad and torch.is_grad_enabled()):
            h_raw = self.raw_pass(x)
            f_raw = self.projector(h_raw)
            pooled_raw = f_raw.mean(dim=1)
        self.record_health(std_encoder=feature_std(h_raw))    # rows: the raw pass's patch tokens
        if not cfg.raw_grad:
            f_raw, pooled_raw = f_raw.detach(), pooled_raw.detach()

        terms: dict[str, torch.Tensor] = {}
        for branch in cfg.branches:
            if branch == "intra":
                pixel_mask = batch["intra_mask"][:, 0]                                # [B, T, F]
                fill = (torch.zeros_like(x) if cfg.intra.fill == "zeros"
                        else x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x))
                h = self.encoder.forward_features(torch.where(pixel_mask[:, None], fill, x))[:, 1:]
                masked = token_mask(pixel_mask, self.patch)
            else:
                masked = batch["inter_mask"][:, 0]                                    # [B, N]
                h = self.inter_tokens(x, masked)
            f = self.projector(h)
            recon_patches = masked if cfg.recon_on == "masked" else torch.ones_like(masked)
            pixels = self.pixel_head(h)
            terms[f"recon_{branch}"] = weighted_patch_mse(pixels, target_pixels, recon_patches, weights)
            self.record_health(**{f"recon_vs_mean_{branch}": recon_vs_mean(pixels, target_pixels,
                                                                          recon_patches[..., None])})
            terms[f"mse_{branch}"] = feature_mse(f, f_raw)
            terms[f"kl_{branch}"] = feature_kl(f, f_raw, cfg.kl_temp)
            terms[f"contrast_{branch}"] = info_nce(f.mean(dim=1), pooled_raw, cfg.contrast_temp)

        w = cfg.loss_weights
        group = {"recon": w.alpha, "mse": w.alpha, "kl": w.beta, "contrast": w.contrast}
        total = sum(group[name.split("_")[0]] * value for name, value in terms.items())
        return {"loss": total, **terms}

    def export_encoder(self, which: str = "teacher") -> AudioViT:
        return self.encoder


__all__ = ["ACMSSKDConfig", "ACMSSKDMasker", "ACMSSKDObjective", "IntraConfig", "InterConfig", "LossWeights",
           "MAEModule", "ModeProbs", "feature_kl", "feature_mse", "info_nce", "weighted_patch_mse"]
