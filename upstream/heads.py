"""Pretraining heads: the shared DINO-style projection head and the spectrogram reconstruction head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int) -> nn.Sequential:
    dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i in range(layers):
        modules.append(nn.Linear(dims[i], dims[i + 1]))
        if i < layers - 1:
            modules.append(nn.GELU())
    return nn.Sequential(*modules)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def init_linear_xavier(*modules: nn.Module) -> None:
    """MAE's initialisation of every Linear layer inside `modules`: xavier-uniform weights, zero biases."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)


class ProjectionHead(nn.Module):
    """3 FC layers (hidden, hidden, bottleneck) with GELU, L2-normalised bottleneck, weight-normalised last layer.

    One instance projects both the CLS token (global loss) and the data tokens (local loss): the paper shares the
    head's weights between the two. With `norm_last_layer` the weight-norm gain is fixed at 1 (DINO's default).
    """

    def __init__(self, in_dim: int, out_dim: int = 8192, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 norm_last_layer: bool = True) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, layers=3)
        self.mlp.apply(_init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        gain.data.fill_(1.0)
        if norm_last_layer:
            gain.requires_grad_(False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(self.mlp(tokens), dim=-1, p=2)
        return self.last_layer(x)


class ReconstructionHead(nn.Module):
    """Tokens -> spectrogram: 3 FC (hidden, hidden, bottleneck) with GELU, then a transposed conv that paints each
    token's bottleneck vector back onto its patch_size × patch_size pixels."""

    def __init__(self, in_dim: int, patch_size: int = 16, hidden_dim: int = 2048, bottleneck_dim: int = 256) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, layers=3)
        self.mlp.apply(_init_linear)
        self.to_pixels = nn.ConvTranspose2d(bottleneck_dim, 1, kernel_size=patch_size, stride=patch_size)

    def forward(self, data_tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, Tp·Fp, D] (time-major) -> [B, 1, Tp·p, Fp·p]."""
        b, n, _ = data_tokens.shape
        t, f = grid
        x = self.mlp(data_tokens).transpose(1, 2).reshape(b, -1, t, f)
        return self.to_pixels(x)
