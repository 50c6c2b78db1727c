"""ACM-SSKD's corruptions and HOG prior (Gong et al., Electronics 2024, 13, 52, §3.1, §3.3, §4.1): pure functions.

Spectrograms are [T, F] arrays (time = rows, frequency = columns), cut into non-overlapping `patch` × `patch`
patches numbered time-major (frequency fastest), the order of the ViT's tokens.

- `hog_patch_stats` / `hog_zscores`: the per-patch gradient statistic x_p and its standardised value
  z_p = (x_p − μ)/σ over the clip's patches, the quantity inside formulas (1) and (2).
- `intra_patch_mask`: the time / frequency / joint ("time-frequency") masks inside at most half of the patches
  (§4.1).
- `inter_patch_mask`: whole patches masked with the HOG prior of formula (1), by Gumbel-top-k (§3.1, Table 3).
- `hog_weights`: the per-patch loss weight of formula (2), w_p = exp(−z_p²).

Readings that are ours and not the paper's are marked CHOICE (listed in docs/pretraining.md, "ACM-SSKD").
"""

from __future__ import annotations

import math
from typing import NamedTuple, TypeVar

import numpy as np
import torch

from .errors import AsitError

MODES = ("time", "freq", "joint")   # intra-patch mask modes, coded 0, 1, 2 in `IntraPatchMask.modes`

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    if patch < 1 or height % patch or width % patch or height == 0 or width == 0:
        raise AsitError(f"spectrogram of shape {(height, width)} is not a non-empty multiple of the patch size "
                        f"{patch}")
    return height // patch, width // patch


# -- HOG prior -----------------------------------------------------------------------------------------------------
def gradient_magnitude(spec: np.ndarray | torch.Tensor) -> np.ndarray:
    """|∇S| of a [T, F] spectrogram with centred differences, 0 on the border rows / columns.

    CHOICE (Dalal–Triggs / MaskFeat gradients; the paper says only "HOG"): g_t = S[t+1, f] − S[t−1, f],
    g_f = S[t, f+1] − S[t, f−1] (the [−1, 0, 1] kernel, no division by 2), each 0 where a neighbour is missing;
    magnitude √(g_t² + g_f²).
    """
    s = _as_numpy(spec).astype(np.float64)
    if s.ndim != 2:
        raise AsitError(f"gradient_magnitude takes a [T, F] spectrogram, got shape {s.shape}")
    gt = np.zeros_like(s)
    gf = np.zeros_like(s)
    gt[1:-1, :] = s[2:, :] - s[:-2, :]
    gf[:, 1:-1] = s[:, 2:] - s[:, :-2]
    return np.sqrt(gt * gt + gf * gf)


def hog_patch_stats(spec: np.ndarray | torch.Tensor, patch: int) -> np.ndarray:
    """x_p of formula (1), "the gradient mean within each patch": [Tp·Fp] float64, time-major.

    CHOICE: the mean of `gradient_magnitude` over the patch's pixels, which equals the patch's unnormalised HOG cell
    histogram summed over orientations divided by patch², so no orientation binning is needed.
    """
    g = gradient_magnitude(spec)
    tp, fp = _check_grid(*g.shape, patch)
    return g.reshape(tp, patch, fp, patch).mean(axis=(1, 3)).reshape(-1)


def hog_zscores(stats: np.ndarray | torch.Tensor, eps: float = 1e-6) -> np.ndarray:
    """z_p = (x_p − μ) / (σ + eps) with μ, σ the mean and (population) standard deviation over the clip's patches.

    Formula (1) reads e^{−(x−μ)²/σ²} with σ "the gradient variance across all patches". CHOICE: σ is taken as
    the standard deviation (the Gaussian form needs one), computed per clip, not over the dataset. Constant
    statistics give z = 0 everywhere (uniform masking, weight 1).
    """
    x = _as_numpy(stats).astype(np.float64)
    return (x - x.mean()) / (x.std() + eps)


def hog_weights(z: ArrayT) -> ArrayT:
    """Formula (2)'s per-patch weight 1 / e^{(x−μ)²/σ²} = exp(−z_p²) (numpy or torch, same type out).

    CHOICE: one weight per patch (x is the patch's statistic), applied to every pixel of that patch.
    """
    if isinstance(z, torch.Tensor):
        return torch.exp(-z.float() ** 2)
    return np.exp(-np.asarray(z, dtype=np.float64) ** 2)


# -- intra-patch (time-frequency) mask ------------------------------------------------------------------------------
class IntraPatchMask(NamedTuple):
    pixels: np.ndarray     # [T, F] bool: masked pixels
    selected: np.ndarray   # [Tp·Fp] bool: the patches holding a mask
    modes: np.ndarray      # [Tp·Fp] int8: 0 time, 1 freq, 2 joint (MODES), −1 where not selected


def intra_patch_mask(height: int, width: int, patch: int, rng: np.random.Generator,
                     max_patch_ratio: float = 0.5, mode_probs: tuple[float, float, float] = (0.3, 0.3, 0.4),
                     max_band: int = 4) -> IntraPatchMask:
    """Random time / frequency / joint masks inside a random subset of patches (§3.1 "Random masking is implemented
    within each patch", §4.1).

    Paper (§4.1): the masked patches do "not exceed 50% of the total patch count"; each masked patch gets a time
    mask with probability 0.3, a frequency mask with 0.3, a joint time-frequency mask with 0.4; a mask covers at
    most 25% of the patch (4 of 16 pixels). Our readings:
    - CHOICE ("not exceed" as SpecAugment's "up to"): r ~ U[0, max_patch_ratio), n = max(1, ⌊r·N⌋) patches
      drawn uniformly without replacement (⌊·⌋ keeps n ≤ 50% for every N ≥ 2; the HOG prior of the intra branch
      is only in the loss, Table 1).
    - CHOICE: time mode = w ~ U{1..max_band} consecutive frames (rows) of the patch at a uniform offset, all its
      bins; frequency mode = w ~ U{1..max_band} consecutive bins, all its frames; joint = both bands, drawn
      independently (their union, as SpecAugment applies both masks). Widths start at 1 (0 would mask nothing).
    The mask never leaves its patch.
    """
    tp, fp = _check_grid(height, width, patch)
    if not 1 <= max_band <= patch:
        raise AsitError(f"intra-patch max_band must be in [1, {patch}] pixels, got {max_band}")
    probs = np.asarray(mode_probs, dtype=np.float64)
    n_total = tp * fp
    ratio = rng.uniform(0.0, max_patch_ratio)
    n = max(1, int(math.floor(ratio * n_total)))
    chosen = rng.choice(n_total, size=n, replace=False)
    modes = rng.choice(len(MODES), size=n, p=probs / probs.sum()).astype(np.int8)
    widths_t = rng.integers(1, max_band + 1, size=n)
    widths_f = rng.integers(1, max_band + 1, size=n)
    starts_t = rng.integers(0, patch - widths_t + 1)
    starts_f = rng.integers(0, patch - widths_f + 1)
    idx = np.arange(patch)
    rows = (idx >= starts_t[:, None]) & (idx < (starts_t + widths_t)[:, None]) & (modes != 1)[:, None]   # [n, P]
    cols = (idx >= starts_f[:, None]) & (idx < (starts_f + widths_f)[:, None]) & (modes != 0)[:, None]   # [n, P]
    grid = np.zeros((n_total, patch, patch), dtype=bool)
    grid[chosen] = rows[:, :, None] | cols[:, None, :]
    pixels = grid.reshape(tp, fp, patch, patch).transpose(0, 2, 1, 3).reshape(height, width)
    selected = np.zeros(n_total, dtype=bool)
    selected[chosen] = True
    all_modes = np.full(n_total, -1, dtype=np.int8)
    all_modes[chosen] = modes
    return IntraPatchMask(pixels, selected, all_modes)


# -- inter-patch (block) mask with the HOG prior --------------------------------------------------------------------
def num_masked(num_patches: int, ratio: float) -> int:
    """k = round(ratio·N) (halves rounded up), kept in [1, N − 1] so both sides are non-empty when N ≥ 2."""
    k = int(math.floor(ratio * num_patches + 0.5))
    return min(max(k, 1), max(num_patches - 1, 1))


def inter_patch_mask(z: np.ndarray | torch.Tensor, ratio: float, sign: int, rng: np.random.Generator) -> np.ndarray:
    """[N] bool, exactly `num_masked(N, ratio)` True: whole patches masked MAE-style (§3.1, Fig 4; 75%, Table 3).

    Formula (1) S_p = 1 / e^{−(x−μ)²/σ²} = e^{z_p²} is the (unnormalised) probability of masking patch p.
    Sampling k patches without replacement with probability ∝ e^{sign·z_p²} is done in log space by Gumbel-top-k:
    keys_p = sign·z_p² + G_p, G_p ~ Gumbel(0, 1), mask the k largest keys (no overflow for large z).
    - sign = +1 (CHOICE, the formula literally): patches far from the clip's mean gradient (salient or silent) are
      masked more often, those near the mean kept — "the closer a sample is to the mean, the higher its sampling
      probability" then reads as the probability of being kept.
    - sign = −1: the other reading (patches near the mean are masked more often).
    - sign = 0: uniform random masking (plain MAE).
    """
    zz = _as_numpy(z).astype(np.float64).reshape(-1)
    if sign not in (-1, 0, 1):
        raise AsitError(f"hog_mask_sign must be +1, -1 or 0, got {sign}")
    k = num_masked(zz.size, ratio)
    keys = sign * zz * zz + rng.gumbel(size=zz.size)
    mask = np.zeros(zz.size, dtype=bool)
    mask[np.argpartition(-keys, k - 1)[:k]] = True
    return mask


__all__ = ["MODES", "IntraPatchMask", "gradient_magnitude", "hog_patch_stats", "hog_zscores", "hog_weights",
           "intra_patch_mask", "num_masked", "inter_patch_mask"]
