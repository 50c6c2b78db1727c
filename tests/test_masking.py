from __future__ import annotations

import numpy as np
import pytest
import torch

from upstream.errors import AsitError
from upstream.masking import GMMLViewMasker, MaskingConfig, apply_masks, gmml_mask, token_mask


def test_ratio_within_3_percent_over_a_batch() -> None:
    rng = np.random.default_rng(0)
    for ratio in (0.4, 0.7):
        cfg = MaskingConfig(ratio=ratio)
        masks = np.stack([gmml_mask(592, 128, cfg, rng) for _ in range(16)])
        assert abs(masks.mean() - ratio) <= 0.03
        assert all(abs(m.mean() - ratio) <= 0.03 for m in masks)


def test_masks_are_not_aligned_to_the_patch_grid() -> None:
    rng = np.random.default_rng(1)
    mask = np.stack([gmml_mask(192, 128, MaskingConfig(), rng) for _ in range(4)])
    # region boundaries along time and frequency: positions where the mask changes value
    time_edges = np.nonzero(np.diff(mask.astype(int), axis=1))[1] + 1
    freq_edges = np.nonzero(np.diff(mask.astype(int), axis=2))[2] + 1
    assert (time_edges % 16 != 0).mean() > 0.5
    assert (freq_edges % 16 != 0).mean() > 0.5


def test_regions_are_large_blocks_not_scattered_pixels() -> None:
    mask = gmml_mask(192, 128, MaskingConfig(), np.random.default_rng(2))
    # a masked pixel's right neighbour is masked far more often than for i.i.d. pixels at the same ratio
    same = (mask[:, 1:] & mask[:, :-1]).sum() / mask[:, :-1].sum()
    assert same > 0.9


def test_token_mask_marks_a_token_if_any_pixel_is_masked() -> None:
    pixels = torch.zeros(32, 32, dtype=torch.bool)
    pixels[17, 3] = True          # time patch 1, freq patch 0
    pixels[5:7, 20:22] = True     # time patch 0, freq patch 1
    tokens = token_mask(pixels, 16)
    assert tokens.tolist() == [False, True, True, False]  # time-major: (0,0) (0,1) (1,0) (1,1)


def test_view_masker_is_a_function_of_the_generator() -> None:
    views = torch.zeros(2, 1, 64, 128)
    masker = GMMLViewMasker(MaskingConfig(other_clip_prob=0.5))
    a = masker({"views": views}, np.random.default_rng(7))
    b = masker({"views": views}, np.random.default_rng(7))
    assert a["masks"].shape == (2, 64, 128) and a["masks"].equal(b["masks"])
    assert a["use_other_clip"].equal(b["use_other_clip"])


def test_apply_masks_zeros_or_next_clip_pixels() -> None:
    views = torch.stack([torch.full((2, 1, 4, 4), float(i + 1)) for i in range(3)])   # [B=3, V=2, 1, 4, 4]
    masks = torch.zeros(3, 2, 4, 4, dtype=torch.bool)
    masks[:, :, :2] = True
    other = torch.tensor([[False, True], [False, False], [True, True]])
    out = apply_masks(views, masks, other)
    assert out[0, 0, 0, 0].tolist() == [0, 0, 0, 0] and out[0, 0, 0, 3].tolist() == [1, 1, 1, 1]
    assert out[0, 1, 0, 0].tolist() == [3, 3, 3, 3]   # donor = the previous clip in the batch (roll by one)
    assert out[2, 0, 0, 0].tolist() == [2, 2, 2, 2]
    assert out[1, 1, 0, 1].tolist() == [0, 0, 0, 0]


def test_aligned_masks_cover_whole_patches_near_the_ratio() -> None:
    """Table III's 'aligned' arm: every 16×16 patch is either fully masked or untouched."""
    views = torch.zeros(1, 1, 192, 128)
    config = MaskingConfig(ratio=0.7, aligned=True)
    for seed in range(20):
        mask = GMMLViewMasker(config, patch_size=16)({"views": views}, np.random.default_rng(seed))["masks"][0]
        per_patch = mask.reshape(12, 16, 8, 16).float().mean(dim=(1, 3))
        assert set(per_patch.unique().tolist()) <= {0.0, 1.0}
        assert abs(float(per_patch.mean()) - 0.7) <= 1 / 96 + 1e-9   # within one patch of the target
    unaligned = GMMLViewMasker(MaskingConfig(ratio=0.7))({"views": views}, np.random.default_rng(0))["masks"][0]
    partial = unaligned.reshape(12, 16, 8, 16).float().mean(dim=(1, 3))
    assert ((partial > 0) & (partial < 1)).any()   # the default (paper) masks cut through patches


def test_aligned_masks_refuse_a_crop_off_the_patch_grid() -> None:
    with pytest.raises(AsitError, match="multiple of the patch size 16"):
        GMMLViewMasker(MaskingConfig(aligned=True), 16)({"views": torch.zeros(1, 1, 40, 128)},
                                                        np.random.default_rng(0))
