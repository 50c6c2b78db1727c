"""Gumbel product quantizer of wav2vec 2.0, for the optional `targets: quantized` of the conformer objective.

G codebooks of V entries each (defaults G = 2, V = 320): a linear layer scores every entry, one entry per group is
chosen (hard Gumbel-softmax with a straight-through gradient in training, argmax in eval), the chosen entries are
concatenated and projected. The diversity loss pushes the batch-average code distribution towards uniform so that
all entries get used: L_d = (G V - sum_g exp(H(p_g))) / (G V), p_g = the noise-free softmax averaged over positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import AsitError

_LOG_FLOOR = 1e-12  # p log p with p clamped inside the log: exact for p >= 1e-12, finite gradient at p = 0


def gumbel_temperature(step: int, start: float = 2.0, end: float = 0.5, decay: float = 0.999995) -> float:
    """max(start * decay**step, end): a pure function of the optimizer step, so a resumed run is exact."""
    if step < 0:
        raise AsitError(f"step must be >= 0, got {step}")
    return max(start * decay ** step, end)


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [..., output_dim]
    codes: torch.Tensor  # long [..., groups]: chosen entry per group
    prob_perplexity: torch.Tensor  # scalar: sum_g exp(entropy of the batch-average softmax of group g)
    diversity_loss: torch.Tensor  # scalar: (G*V - prob_perplexity) / (G*V)
    code_perplexity: torch.Tensor  # scalar: same formula on the hard one-hot code counts (for logging)


def _perplexity(probs: torch.Tensor) -> torch.Tensor:
    """sum over groups of exp(entropy) of the [G, V] distributions: G V when uniform, G when one-hot."""
    entropy = -(probs * probs.clamp_min(_LOG_FLOOR).log()).sum(dim=-1)
    return entropy.exp().sum()


class GumbelProductQuantizer(nn.Module):
    """Product quantizer: `groups` codebooks of `entries` vectors of codebook_dim // groups dims each.

    The codebook is initialised uniform in [0, 1) (as wav2vec 2.0's fairseq code); the logits layer N(0, 1), bias 0.
    """

    def __init__(self, input_dim: int, groups: int = 2, entries: int = 320, codebook_dim: int = 256,
                 output_dim: int = 256) -> None:
        super().__init__()
        for name, value in (("input_dim", input_dim), ("groups", groups), ("entries", entries),
                            ("codebook_dim", codebook_dim), ("output_dim", output_dim)):
            if value < 1:
                raise AsitError(f"quantizer {name} must be >= 1, got {value}")
        if codebook_dim % groups != 0:
            raise AsitError(f"quantizer codebook_dim ({codebook_dim}) must be divisible by groups ({groups})")
        self.groups, self.entries = groups, entries
        self.logits = nn.Linear(input_dim, groups * entries)
        nn.init.normal_(self.logits.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.logits.bias)
        self.codebook = nn.Parameter(torch.rand(groups * entries, codebook_dim // groups))
        self.project = nn.Linear(codebook_dim, output_dim)

    def forward(self, x: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantize x [..., input_dim]; the perplexities average over the positions where `mask` is True (or all)."""
        if x.dim() < 1 or x.shape[-1] != self.logits.in_features:
            raise AsitError(f"x must be [..., {self.logits.in_features}], got shape {tuple(x.shape)}")
        if not temperature > 0:
            raise AsitError(f"temperature must be > 0, got {temperature}")
        lead = x.shape[:-1]
        groups, entries = self.groups, self.entries
        if mask is None:
            selected = torch.ones(lead, dtype=torch.bool, device=x.device)
        else:
            if mask.dtype != torch.bool:
                raise AsitError(f"mask must be bool, got {mask.dtype}")
            try:
                selected = torch.broadcast_to(mask.to(x.device), lead)
            except RuntimeError as error:
                raise AsitError(f"mask of shape {tuple(mask.shape)} does not broadcast to {tuple(lead)}") from error
        selected = selected.reshape(-1)
        if not bool(selected.any()):
            raise AsitError("mask selects no position: the quantizer perplexity is undefined")

        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).float()
            logits = F.linear(flat, self.logits.weight.float(), self.logits.bias.float()).view(-1, groups, entries)
            avg_probs = logits.softmax(dim=-1)[selected].mean(dim=0)  # [G, V], no Gumbel noise
            if self.training:
                one_hot = F.gumbel_softmax(logits, tau=temperature, hard=True, dim=-1)  # straight-through
                codes = one_hot.argmax(dim=-1)
            else:
                codes = logits.argmax(dim=-1)
                one_hot = F.one_hot(codes, entries).float()
        prob_perplexity = _perplexity(avg_probs)
        code_perplexity = _perplexity(one_hot.detach()[selected].mean(dim=0))
        diversity_loss = (groups * entries - prob_perplexity) / (groups * entries)

        codebook = self.codebook.view(groups, entries, -1)
        if self.training:
            chosen = torch.einsum("ngv,gvd->ngd", one_hot.to(codebook.dtype), codebook)
        else:  # plain indexing: exact, and no gradient through the argmax anyway
            chosen = codebook[torch.arange(groups, device=codes.device), codes]
        quantized = self.project(chosen.reshape(chosen.shape[0], -1))
        return QuantizerOutput(
            quantized=quantized.reshape(*lead, quantized.shape[-1]),
            codes=codes.reshape(*lead, groups),
            prob_perplexity=prob_perplexity,
            diversity_loss=diversity_loss,
            code_perplexity=code_perplexity,
        )
