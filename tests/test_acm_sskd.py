"""ACM-SSKD (Gong et al. 2024): HOG statistics and masks, the loss terms against hand computations, the stop-gradient
raw pass, the paper's ~92M size and a tiny training run where every loss term falls."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY_CONFORMER, TINY_ENCODER
from torch.utils.data import default_collate

from upstream.encoders import AudioViT, EncoderConfig
from upstream.errors import AsitError
from upstream.hog_masks import (
    gradient_magnitude,
    hog_patch_stats,
    hog_weights,
    hog_zscores,
    inter_patch_mask,
    intra_patch_mask,
    num_masked,
)
from upstream.mae_decoder import patchify
from upstream.masking import token_mask
from upstream.objectives.acm_sskd import (
    ACMSSKDObjective,
    feature_kl,
    feature_mse,
    info_nce,
    weighted_patch_mse,
)
from upstream.schedules import TrainingProgress

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_PARAMS = {"inter": {"mae_dim": 32, "mae_heads": 2}, "proj_hidden_dim": 128}
PROGRESS = TrainingProgress(step=0, total_steps=30, epoch=0, steps_per_epoch=30)


def tiny_objective(**overrides) -> ACMSSKDObjective:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return ACMSSKDObjective.from_config({**TINY_PARAMS, **overrides}, TINY_ENCODER)


def make_batch(objective: ACMSSKDObjective, views: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-sample view_transform (as the data workers run it) + default collation, like the pretraining loader."""
    transform = objective.view_transform()
    samples = []
    for i, view in enumerate(views):
        sample = {"views": view}
        sample.update(transform(sample, np.random.default_rng([seed, 0, i])))
        samples.append(sample)
    return default_collate(samples)


def spiky_spectrogram(seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """64 x 128 (4 x 8 patches): smooth low-level noise plus three checkerboard (high-gradient) patches."""
    rng = np.random.default_rng(seed)
    spec = 0.01 * rng.standard_normal((64, 128))
    hot = [3, 14, 29]
    checker = np.indices((16, 16)).sum(axis=0) % 2 * 4.0 - 2.0
    for p in hot:
        t, f = divmod(p, 8)
        spec[t * 16:(t + 1) * 16, f * 16:(f + 1) * 16] += checker
    return spec, hot


# -- (c) HOG statistic ---------------------------------------------------------------------------------------------
def test_hog_statistic_equals_hand_computation() -> None:
    rng = np.random.default_rng(1)
    spec = rng.standard_normal((32, 32))
    expected = np.zeros(4)
    for p in range(4):
        pt, pf = divmod(p, 2)
        total = 0.0
        for t in range(pt * 16, pt * 16 + 16):
            for f in range(pf * 16, pf * 16 + 16):
                gt = spec[t + 1, f] - spec[t - 1, f] if 0 < t < 31 else 0.0
                gf = spec[t, f + 1] - spec[t, f - 1] if 0 < f < 31 else 0.0
                total += math.sqrt(gt * gt + gf * gf)
        expected[p] = total / 256
    np.testing.assert_allclose(hog_patch_stats(spec, 16), expected, rtol=1e-12)
    np.testing.assert_allclose(hog_patch_stats(torch.from_numpy(spec).float(), 16), expected, rtol=1e-5)
    assert gradient_magnitude(spec)[0].sum() > 0 and np.all(gradient_magnitude(np.ones((8, 8))) == 0)
    z = hog_zscores(expected)
    np.testing.assert_allclose(z, (expected - expected.mean()) / (expected.std() + 1e-6))
    np.testing.assert_allclose(hog_weights(z), np.exp(-z ** 2))
    torch.testing.assert_close(hog_weights(torch.tensor(z)), torch.exp(-torch.tensor(z).float() ** 2))
    assert np.all(hog_zscores(np.full(5, 3.0)) == 0)       # constant statistics: uniform prior, weight 1
    with pytest.raises(AsitError, match="multiple of the patch size"):
        hog_patch_stats(np.zeros((30, 32)), 16)


# -- (a) intra-patch mask ------------------------------------------------------------------------------------------
def test_intra_patch_mask_statistics() -> None:
    rng = np.random.default_rng(0)
    counts = np.zeros(3)
    shares = []
    max_band = 4
    for _ in range(600):
        mask = intra_patch_mask(64, 128, 16, rng, max_patch_ratio=0.5, mode_probs=(0.3, 0.3, 0.4),
                                max_band=max_band)
        patches = mask.pixels.reshape(4, 16, 8, 16).transpose(0, 2, 1, 3).reshape(32, 16, 16)
        shares.append(mask.selected.mean())
        assert 1 <= mask.selected.sum() <= 16
        # nothing outside the selected patches, something inside each
        assert not patches[~mask.selected].any()
        assert patches[mask.selected].any(axis=(1, 2)).all()
        np.testing.assert_array_equal(token_mask(torch.from_numpy(mask.pixels), 16).numpy(), mask.selected)
        for patch, mode in zip(patches[mask.selected], mask.modes[mask.selected]):
            rows = np.flatnonzero(patch.all(axis=1))           # fully masked frames (time band)
            cols = np.flatnonzero(patch.all(axis=0))           # fully masked bins (frequency band)
            band_rows = np.zeros((16, 16), bool)
            band_rows[rows] = True
            band_cols = np.zeros((16, 16), bool)
            band_cols[:, cols] = True
            for band in (rows, cols):
                assert len(band) <= max_band and (len(band) == 0 or np.all(np.diff(band) == 1))
            if mode == 0:
                assert len(rows) >= 1 and len(cols) == 0
            elif mode == 1:
                assert len(cols) >= 1 and len(rows) == 0
            else:
                assert len(rows) >= 1 and len(cols) >= 1
            np.testing.assert_array_equal(patch, band_rows | band_cols)
        counts += np.bincount(mask.modes[mask.selected], minlength=3)
    assert max(shares) <= 0.5
    assert abs(np.mean(shares) - 0.25) < 0.03                  # ratio ~ U[0, 0.5)
    assert counts.sum() > 4000
    np.testing.assert_allclose(counts / counts.sum(), [0.3, 0.3, 0.4], atol=0.05)


def test_intra_patch_mask_modes_follow_config() -> None:
    rng = np.random.default_rng(3)
    mask = intra_patch_mask(64, 128, 16, rng, mode_probs=(0.0, 1.0, 0.0), max_band=2)
    assert set(mask.modes[mask.selected].tolist()) == {1}
    with pytest.raises(AsitError, match="max_band"):
        intra_patch_mask(64, 128, 16, rng, max_band=17)


# -- (b) inter-patch mask ------------------------------------------------------------------------------------------
def test_inter_mask_count_and_hog_prior_sign() -> None:
    spec, hot = spiky_spectrogram()
    z = hog_zscores(hog_patch_stats(spec, 16))
    assert np.all(np.abs(z[hot]) > 2.0)
    rng = np.random.default_rng(0)
    gaps = {}
    for sign in (1, -1):
        masked_z2, kept_z2 = [], []
        for _ in range(200):
            mask = inter_patch_mask(z, 0.75, sign, rng)
            assert mask.sum() == round(0.75 * 32) == num_masked(32, 0.75)
            masked_z2.append(np.mean(z[mask] ** 2))
            kept_z2.append(np.mean(z[~mask] ** 2))
        gaps[sign] = np.mean(masked_z2) - np.mean(kept_z2)
    assert gaps[1] > 0.5 and gaps[-1] < -0.5
    # sign 0: uniform, independent of the HOG statistic (the same draw as for a flat prior)
    for seed in range(20):
        np.testing.assert_array_equal(inter_patch_mask(z, 0.75, 0, np.random.default_rng(seed)),
                                      inter_patch_mask(np.zeros(32), 0.75, 0, np.random.default_rng(seed)))
    rate = np.mean([inter_patch_mask(z, 0.75, 0, rng)[hot] for _ in range(2000)])
    assert abs(rate - 0.75) < 0.03
    assert num_masked(512, 0.75) == 384 and num_masked(2, 0.99) == 1 and num_masked(10, 0.01) == 1


def test_inter_mask_samples_formula_1() -> None:
    """k = 1: Gumbel-top-k draws patch p with probability exactly e^{z_p^2} / sum_q e^{z_q^2} (formula (1))."""
    z = np.array([0.0, 0.5, 1.0, 1.5])
    rng = np.random.default_rng(0)
    draws = np.stack([inter_patch_mask(z, 0.25, 1, rng) for _ in range(20000)])
    assert np.all(draws.sum(axis=1) == 1)
    expected = np.exp(z ** 2) / np.exp(z ** 2).sum()
    np.testing.assert_allclose(draws.mean(axis=0), expected, atol=0.015)


# -- the view transform --------------------------------------------------------------------------------------------
def test_view_transform_outputs_are_seeded_and_picklable() -> None:
    objective = tiny_objective()
    transform = pickle.loads(pickle.dumps(objective.view_transform()))
    views = torch.randn(1, 1, 64, 128)
    out = transform({"views": views}, np.random.default_rng([0, 1, 2]))
    assert out["intra_mask"].shape == (1, 64, 128) and out["intra_mask"].dtype == torch.bool
    assert out["inter_mask"].shape == (1, 32) and int(out["inter_mask"].sum()) == 24
    assert out["hog_z"].shape == (1, 32) and out["hog_z"].dtype == torch.float32
    np.testing.assert_allclose(out["hog_z"][0].numpy(), hog_zscores(hog_patch_stats(views[0, 0], 16)), rtol=1e-5)
    again = transform({"views": views}, np.random.default_rng([0, 1, 2]))
    other = transform({"views": views}, np.random.default_rng([0, 1, 3]))
    for key in out:
        assert torch.equal(out[key], again[key])
    assert not torch.equal(out["intra_mask"], other["intra_mask"])
    assert not torch.equal(out["inter_mask"], other["inter_mask"])
    assert set(tiny_objective(branches=["intra"]).view_transform()({"views": views}, np.random.default_rng(0))) \
        == {"hog_z", "intra_mask"}


# -- (d) losses against hand computations --------------------------------------------------------------------------
def test_weighted_patch_mse_equals_hand_computation() -> None:
    torch.manual_seed(1)
    pred, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    patches = torch.tensor([[True, False, True], [False, False, True]])
    weights = torch.rand(2, 3)
    total, count = 0.0, 0
    for b in range(2):
        for n in range(3):
            if patches[b, n]:
                total += float(weights[b, n]) * float(((pred[b, n] - target[b, n]) ** 2).mean())
                count += 1
    assert weighted_patch_mse(pred, target, patches, weights).item() == pytest.approx(total / count, rel=1e-6)
    unweighted = ((pred - target) ** 2).mean(-1)[patches].mean()
    assert weighted_patch_mse(pred, target, patches).item() == pytest.approx(unweighted.item(), rel=1e-6)
    assert weighted_patch_mse(pred, target, torch.zeros_like(patches)).item() == 0.0


def test_feature_mse_kl_and_info_nce_equal_hand_computations() -> None:
    torch.manual_seed(2)
    f, g = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    assert feature_mse(f, g).item() == pytest.approx(((f - g) ** 2).mean().item(), rel=1e-6)

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    for temp in (1.0, 0.5):
        p, q = softmax(g.numpy() / temp), softmax(f.numpy() / temp)   # P: the raw target, Q: the prediction
        expected = (p * (np.log(p) - np.log(q))).sum(-1).mean()
        assert feature_kl(f, g, temp).item() == pytest.approx(expected, rel=1e-5)
    assert feature_kl(g, g).item() == pytest.approx(0.0, abs=1e-6)

    u, v = torch.randn(4, 6), torch.randn(4, 6)
    un = u.numpy() / np.linalg.norm(u.numpy(), axis=1, keepdims=True)
    vn = v.numpy() / np.linalg.norm(v.numpy(), axis=1, keepdims=True)
    logits = un @ vn.T / 0.1
    expected = -np.mean([logits[b, b] - np.log(np.exp(logits[b]).sum()) for b in range(4)])
    assert info_nce(u, v, 0.1).item() == pytest.approx(expected, rel=1e-5)
    same = torch.ones(8, 6)
    assert info_nce(same, same * 3, 0.1).item() == pytest.approx(math.log(8), rel=1e-6)


def _gathered_info_nce_worker(rank: int, world: int, init_file: str, u: torch.Tensor, v: torch.Tensor,
                              queue) -> None:  # type: ignore[no-untyped-def]
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = u.shape[0] // world
        local_v = v[rank * rows:(rank + 1) * rows].clone().requires_grad_(True)
        loss = info_nce(u[rank * rows:(rank + 1) * rows], local_v, 0.1)
        loss.backward()
        queue.put((rank, (float(loss), local_v.grad is not None)))
    finally:
        dist.destroy_process_group()


def test_info_nce_negatives_are_the_global_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two gloo processes of 3 rows each: each rank's loss is the single-process InfoNCE of its rows against all
    6 targets, with the positive at rank·B + b; the local targets keep their gradient."""
    torch.manual_seed(3)
    u, v = torch.randn(6, 5), torch.randn(6, 5)
    context = mp.get_context("fork")                       # fork: no re-import of torch and the test module
    queue = context.SimpleQueue()
    mp.start_processes(_gathered_info_nce_worker, args=(2, str(tmp_path / "init"), u, v, queue), nprocs=2,
                       join=True, start_method="fork")
    out = dict(queue.get() for _ in range(2))
    logits = torch.nn.functional.normalize(u, dim=1) @ torch.nn.functional.normalize(v, dim=1).T / 0.1
    per_row = torch.nn.functional.cross_entropy(logits, torch.arange(6), reduction="none")
    for rank in range(2):
        loss, has_grad = out[rank]
        assert loss == pytest.approx(per_row[rank * 3:(rank + 1) * 3].mean().item(), rel=1e-5)
        assert has_grad


# -- the model -----------------------------------------------------------------------------------------------------
def test_patchify_matches_token_order() -> None:
    x = torch.randn(2, 1, 64, 128)
    patches = patchify(x, 16)
    assert patches.shape == (2, 32, 256)
    for n in (0, 9, 31):
        t, f = divmod(n, 8)
        torch.testing.assert_close(patches[1, n], x[1, 0, t * 16:(t + 1) * 16, f * 16:(f + 1) * 16].reshape(-1))


def test_raw_pass_carries_no_gradient_and_runs_in_eval_mode() -> None:
    objective = tiny_objective()
    objective.encoder = AudioViT(replace(TINY_ENCODER, drop_path_rate=0.5))   # drop path would make passes differ
    objective.train()
    x = torch.randn(2, 1, 64, 128)
    first, second = objective.raw_pass(x), objective.raw_pass(x)
    assert not first.requires_grad
    torch.testing.assert_close(first, second)               # eval mode: no drop path
    assert objective.encoder.training and all(m.training for m in objective.encoder.modules())
    batch = make_batch(objective, x[:, None])
    objective.training_losses(batch, PROGRESS)["loss"].backward()
    assert objective.encoder.patch_embed.proj.weight.grad is not None
    grad_objective = tiny_objective(raw_grad=True)
    assert grad_objective.raw_pass(x).requires_grad


def test_inter_branch_sees_only_visible_patches() -> None:
    objective = tiny_objective().eval()
    x = torch.randn(2, 1, 64, 128)
    batch = make_batch(objective, x[:, None])
    masked = batch["inter_mask"][:, 0]
    pixel_mask = masked.reshape(2, 4, 8)[:, :, None, :, None].expand(2, 4, 16, 8, 16).reshape(2, 1, 64, 128)
    changed = torch.where(pixel_mask, torch.randn_like(x) * 5, x)
    with torch.no_grad():
        torch.testing.assert_close(objective.inter_tokens(x, masked), objective.inter_tokens(changed, masked))
        visible_change = x + 1.0
        assert not torch.allclose(objective.inter_tokens(x, masked), objective.inter_tokens(visible_change, masked))


def test_loss_terms_and_formula_10_weights() -> None:
    objective = tiny_objective(loss_weights={"alpha": 2.0, "beta": 0.5, "contrast": 3.0})
    x = torch.randn(4, 1, 1, 64, 128)
    batch = make_batch(objective, x)
    assert batch["views"].shape == (4, 1, 1, 64, 128)
    out = objective.training_losses(batch, PROGRESS)
    names = {f"{kind}_{branch}" for kind in ("recon", "mse", "kl", "contrast") for branch in ("intra", "inter")}
    assert set(out) == names | {"loss"}
    expected = sum(2.0 * (out[f"recon_{b}"] + out[f"mse_{b}"]) + 0.5 * out[f"kl_{b}"] + 3.0 * out[f"contrast_{b}"]
                   for b in ("intra", "inter"))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    for name in names:
        assert torch.isfinite(out[name]) and out[name].item() >= 0.0

    # hog_weight false: the recon weight is 1
    flat = tiny_objective(hog_weight=False)
    flat.load_state_dict(objective.state_dict())
    flat.eval(), objective.eval()
    with torch.no_grad():
        weighted = objective.training_losses(batch, PROGRESS)
        unweighted = flat.training_losses(batch, PROGRESS)
    assert unweighted["mse_intra"].item() == pytest.approx(weighted["mse_intra"].item(), rel=1e-5)
    assert unweighted["recon_intra"].item() > weighted["recon_intra"].item()
    all_patches = tiny_objective(recon_on="all")
    assert all_patches.training_losses(batch, PROGRESS)["recon_inter"].item() > 0.0


def test_branch_ablations() -> None:
    x = torch.randn(2, 1, 1, 64, 128)
    intra = tiny_objective(branches=["intra"])
    assert intra.mae is None
    out = intra.training_losses(make_batch(intra, x), PROGRESS)
    assert set(out) == {"loss", "recon_intra", "mse_intra", "kl_intra", "contrast_intra"}
    inter = tiny_objective(branches=["inter"])
    out = inter.training_losses(make_batch(inter, x), PROGRESS)
    assert set(out) == {"loss", "recon_inter", "mse_inter", "kl_inter", "contrast_inter"}


def test_seam_and_export() -> None:
    objective = tiny_objective()
    assert objective.data_needs().num_views == 1 and not objective.data_needs().labels
    encoder = objective.export_encoder("teacher")
    assert encoder is objective.encoder is objective.export_encoder("student") and isinstance(encoder, AudioViT)
    prefix = objective.encoder_prefixes["teacher"]
    own = {k[len(prefix):]: v for k, v in objective.state_dict().items() if k.startswith(prefix)}
    fresh = AudioViT(TINY_ENCODER)
    fresh.load_state_dict(own)                               # the checkpoint reader's path: objective.encoder.*
    with pytest.raises(AsitError, match="trains a ViT"):
        ACMSSKDObjective.from_config({}, TINY_CONFORMER)
    with pytest.raises(AsitError, match="one view per clip"):
        objective.training_losses({"views": torch.zeros(2, 2, 1, 64, 128)}, PROGRESS)


@pytest.mark.parametrize(("params", "message"), [
    ({"inter": {"mask_ratio": 1.2}}, r"objective\.inter\.mask_ratio must be in \(0, 1\), got 1\.2"),
    ({"inter": {"hog_mask_sign": 2}}, r"objective\.inter\.hog_mask_sign"),
    ({"inter": {"mae_dim": 30, "mae_heads": 2}}, r"objective\.inter\.mae_dim"),
    ({"intra": {"max_patch_ratio": 0.0}}, r"objective\.intra\.max_patch_ratio"),
    ({"intra": {"max_band": 17}}, r"objective\.intra\.max_band must be in \[1, 16\]"),
    ({"intra": {"mode_probs": {"time": 0.5, "freq": 0.5, "joint": 0.5}}}, r"objective\.intra\.mode_probs"),
    ({"intra": {"fill": "noise"}}, r"objective\.intra\.fill"),
    ({"branches": ["intra", "outer"]}, r"objective\.branches"),
    ({"branches": []}, r"objective\.branches"),
    ({"recon_on": "visible"}, r"objective\.recon_on"),
    ({"contrast_temp": 0.0}, r"objective\.contrast_temp"),
    ({"kl_temp": -1.0}, r"objective\.kl_temp"),
    ({"loss_weights": {"gamma": 1.0}}, r"objective\.loss_weights\.gamma"),
    ({"loss_weights": {"alpha": -1.0}}, r"objective\.loss_weights\.alpha"),
    ({"mask_ratio": 0.5}, r"objective\.mask_ratio"),
])
def test_bad_config_values_are_one_line_errors(params, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AsitError, match=message) as info:
        ACMSSKDObjective.from_config(params, TINY_ENCODER)
    assert "\n" not in str(info.value)


# -- (f) size ------------------------------------------------------------------------------------------------------
def test_base_parameter_count_is_the_papers_92m() -> None:
    objective = ACMSSKDObjective.from_config({}, EncoderConfig(size="base", trained_frames=1024))
    total = sum(p.numel() for p in objective.parameters())
    assert abs(total - 91.88e6) / 91.88e6 < 0.01, total
    assert sum(p.numel() for p in objective.mae.parameters()) == 3_679_744      # one 512-d block (App. A: ≈92M in all)


# -- (g) every loss term falls -------------------------------------------------------------------------------------
def test_every_loss_term_falls_on_a_tiny_vit() -> None:
    objective = tiny_objective()
    torch.manual_seed(0)
    batch = make_batch(objective, torch.randn(8, 1, 1, 64, 128))
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-3)
    objective.train()
    history = []
    for _ in range(30):
        out = objective.training_losses(batch, PROGRESS)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        history.append({name: float(value.detach()) for name, value in out.items()})
    assert len(history[0]) == 9
    for name in history[0]:
        assert history[-1][name] < 0.9 * history[0][name], (name, history[0][name], history[-1][name])
