"""Contrastive task of (conformer) wav2vec 2.0: pick the true latent z_t among K distractors from the same clip.

Eq. (1) of Srivastava et al.: L = -log(exp(sim(c_t, z_t)) / sum over candidates exp(sim(c_t, z~))), sim = cosine.
The similarities are divided by a temperature (0.1, wav2vec 2.0's kappa; the paper prints none, and without one the
loss cannot fall below log(1 + K e^-2)). Distractors are drawn uniformly, with replacement, from the OTHER masked
steps of the same clip (paper §2.2, fairseq's sampling), never across clips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import AsitError


def sample_distractors(mask: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Long [B, M, num]: for the j-th masked step of clip b, `num` step indices (into S) of its other masked steps.

    mask is bool [B, S] with the same count M >= 2 of masked steps in every row (so targets stack to [B, M, C]).
    Each index is uniform over the clip's other M - 1 masked steps, drawn with replacement; never step j itself.
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise AsitError(f"mask must be a bool tensor [B, S], got {mask.dtype} of shape {tuple(mask.shape)}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise AsitError(f"num (distractors per step) must be an integer >= 1, got {num!r}")
    counts = mask.sum(dim=1)
    if mask.shape[0] == 0 or bool((counts != counts[0]).any()) or int(counts[0]) < 2:
        raise AsitError(f"mask must have the same number (>= 2) of masked steps in every clip, got counts "
                        f"{counts.tolist()}")
    batch, masked = mask.shape[0], int(counts[0])
    # masked step positions per clip, in time order: nonzero() lists row-major, so a reshape groups them by clip
    positions = mask.nonzero()[:, 1].reshape(batch, masked)
    device = generator.device if generator is not None else mask.device
    draws = torch.randint(0, masked - 1, (batch, masked, num), generator=generator, device=device).to(mask.device)
    own = torch.arange(masked, device=mask.device).view(1, masked, 1)
    draws = draws + (draws >= own).long()  # skip the positive's own slot: uniform over the other M - 1
    return torch.gather(positions.unsqueeze(1).expand(batch, masked, masked), 2, draws)


def gather_steps(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [B, S, C], index long [B, ...] -> [B, ..., C]: picks positives/distractors per clip by step index."""
    if values.dim() != 3:
        raise AsitError(f"values must be [B, S, C], got shape {tuple(values.shape)}")
    if index.dim() < 1 or index.shape[0] != values.shape[0] or index.dtype != torch.long:
        raise AsitError(f"index must be a long tensor [B, ...] with B = {values.shape[0]}, got {index.dtype} of "
                        f"shape {tuple(index.shape)}")
    batch, channels = values.shape[0], values.shape[2]
    flat = index.reshape(batch, -1)
    picked = torch.gather(values, 1, flat.unsqueeze(-1).expand(batch, flat.shape[1], channels))
    return picked.reshape(*index.shape, channels)


def contrastive_logits(context: torch.Tensor, positives: torch.Tensor, distractors: torch.Tensor,
                       temperature: float = 0.1) -> torch.Tensor:
    """[B, M, 1 + K] float32 logits = cosine(context, candidate) / temperature; candidate 0 is the positive.

    A distractor equal to its positive in every element gets -inf (wav2vec 2.0's neg_is_pos): sampling with
    replacement from a clip can hit a duplicate latent, and it must not be scored as a negative.
    """
    if context.dim() != 3 or positives.shape != context.shape:
        raise AsitError(f"context and positives must both be [B, M, C], got {tuple(context.shape)} and "
                        f"{tuple(positives.shape)}")
    if distractors.dim() != 4 or distractors.shape[:2] != context.shape[:2] or distractors.shape[3] != context.shape[2]:
        raise AsitError(f"distractors must be [B, M, K, C] matching context {tuple(context.shape)}, got "
                        f"{tuple(distractors.shape)}")
    if not temperature > 0:
        raise AsitError(f"temperature must be > 0, got {temperature}")
    context, positives, distractors = context.float(), positives.float(), distractors.float()
    candidates = torch.cat([positives.unsqueeze(2), distractors], dim=2)
    logits = F.cosine_similarity(context.unsqueeze(2), candidates, dim=-1) / temperature
    neg_is_pos = (distractors == positives.unsqueeze(2)).all(dim=-1)
    if bool(neg_is_pos.any()):
        logits = torch.cat([logits[..., :1], logits[..., 1:].masked_fill(neg_is_pos, float("-inf"))], dim=-1)
    return logits


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean over all masked steps of cross-entropy with target 0: eq. (1) of the paper, averaged over the batch."""
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise AsitError(f"logits must be [..., 1 + K], got shape {tuple(logits.shape)}")
    flat = logits.float().reshape(-1, logits.shape[-1])
    if flat.shape[0] == 0:
        raise AsitError("logits hold no masked step: the contrastive loss of an empty mask is undefined")
    target = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
    return F.cross_entropy(flat, target)
