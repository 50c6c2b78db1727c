"""ASiT's losses: L1 on manipulated pixels, and DINO-style self-distillation with a centred, sharpened teacher."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over masked pixels only (0 when nothing is masked)."""
    mask = mask.to(prediction.dtype)
    return ((prediction - target).abs() * mask).sum() / mask.sum().clamp(min=1.0)


class CenteredDistillation(nn.Module):
    """Cross-entropy H(teacher, student) with an EMA center on the teacher's logits.

    teacher probabilities = softmax((t − center) / τt), student log-probabilities = log_softmax(s / τs).
    The center is a buffer (so it is checkpointed) updated with the batch mean of the teacher logits, all-reduced
    across processes when torch.distributed is initialised.
    """

    def __init__(self, dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, dim))

    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return torch.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    def cross_entropy(self, teacher_probs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """Per-row H(p_t, p_s): [..., K] x [..., K] -> [...]."""
        log_p = torch.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        return -(teacher_probs * log_p).sum(dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        flat = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
        total = flat.sum(dim=0, keepdim=True)
        count = torch.tensor([float(flat.shape[0])], device=flat.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        batch_center = total / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1.0 - self.center_momentum))


def global_loss(distill: CenteredDistillation, student_cls: torch.Tensor, teacher_cls: torch.Tensor,
                teacher_temp: float) -> torch.Tensor:
    """Cross-view CLS distillation. student_cls / teacher_cls: [B, V, K]; each student view learns from every
    *other* teacher view, averaged over pairs and batch."""
    probs = distill.teacher_probs(teacher_cls, teacher_temp)
    views = student_cls.shape[1]
    terms = [distill.cross_entropy(probs[:, t], student_cls[:, s]).mean()
             for t in range(views) for s in range(views) if s != t]
    return torch.stack(terms).mean()


def local_loss(distill: CenteredDistillation, student_tokens: torch.Tensor, teacher_tokens: torch.Tensor,
               manipulated: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """Per-token distillation from the clean view (teacher) to the masked view (student) of the same crop,
    averaged over manipulated tokens only. Tokens: [B, V, N, K]; manipulated: [B, V, N] bool."""
    probs = distill.teacher_probs(teacher_tokens, teacher_temp)
    per_token = distill.cross_entropy(probs, student_tokens)
    weights = manipulated.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp(min=1.0)
