"""SupMAM / MAM-CLAP / SupMAM-CLAP (objective `supmam`): masking, the split target loss, the visible-only classifier,
the soft CE, the label plumbing, the frozen teacher, the configs, and that every loss term falls on a fixed batch."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from upstream.checkpoint import save_encoder
from upstream.encoders import AudioViT, ConformerConfig, EncoderConfig
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig
from upstream.mae_decoder import DecoderConfig, MAEDecoder, keep_mask, random_keep_ids, sincos_2d, unshuffle
from upstream.objectives import build_objective
from upstream.objectives.supmam import (RandomPatchMasking, SupMAMObjective, classification_loss, split_means,
                                        target_errors)
from upstream.pretrain_config import load_pretrain_config
from upstream.schedules import TrainingProgress

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = EncoderConfig(size="tiny", embed_dim=64, depth=2, num_heads=2, trained_frames=64, drop_path_rate=0.0)
FRAMES, BINS, CLASSES, B = 64, 128, 5, 4
WAVE_SAMPLES = (FRAMES - 1) * 160 + 400          # exactly the crop's frames at 16 kHz, 25 ms / 10 ms
PROGRESS = TrainingProgress(step=0, total_steps=30, epoch=0, steps_per_epoch=30)
SMALL = {"decoder": {"dim": 32, "heads": 2}, "cls": {"hidden": 32, "num_classes": CLASSES}}


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_encoder(path, AudioViT(TINY), FrontendConfig(), meta={})
    return path


def objective(variant: str, teacher: Path | None = None, **extra) -> SupMAMObjective:
    torch.manual_seed(0)
    spec = {"name": "supmam", "variant": variant, **SMALL, **extra}
    if teacher is not None:
        spec["teacher"] = {"adapter": "asit-hear", "path": str(teacher)}
    built = build_objective(spec, TINY, FrontendConfig())
    assert isinstance(built, SupMAMObjective)
    return built


def make_batch(obj: SupMAMObjective, seed: int = 0) -> dict[str, torch.Tensor]:
    """A collated batch as the data pipeline delivers it (views [B, 1, 1, T, F], per-sample transform outputs)."""
    gen = torch.Generator().manual_seed(seed)
    views = torch.randn(B, 1, 1, FRAMES, BINS, generator=gen)
    transform = obj.view_transform()
    samples = [transform({"views": views[i]}, np.random.default_rng([seed, 0, i])) for i in range(B)]
    labels = torch.zeros(B, CLASSES)
    for i in range(B):
        labels[i, [i % CLASSES, (2 * i + 1) % CLASSES]] = 1.0
    return {"views": views, "ids_keep": torch.stack([s["ids_keep"] for s in samples]), "labels": labels,
            "waves": 0.1 * torch.randn(B, 1, WAVE_SAMPLES, generator=gen)}


# -- (a) masking ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens,ratio,visible", [(512, 0.2, 409), (512, 0.4, 307), (512, 0.8, 102), (32, 0.4, 19),
                                                  (32, 0.2, 25), (96, 0.4, 57)])
def test_visible_count_is_mae_truncation(tokens: int, ratio: float, visible: int) -> None:
    ids = random_keep_ids(tokens, ratio, np.random.default_rng(0))
    assert len(ids) == visible == int(tokens * (1 - ratio))
    assert len(set(ids.tolist())) == visible and ids.min() >= 0 and ids.max() < tokens
    assert np.all(np.diff(ids) > 0)


def test_mask_comes_from_the_sample_rng() -> None:
    transform = RandomPatchMasking(mask_ratio=0.4, patch_size=16)
    transform = pickle.loads(pickle.dumps(transform))            # it runs in data workers
    sample = {"views": torch.zeros(1, 1, 1024, 128)}
    first = transform(sample, np.random.default_rng([0, 3, 17]))["ids_keep"]
    again = transform(sample, np.random.default_rng([0, 3, 17]))["ids_keep"]
    other = transform(sample, np.random.default_rng([0, 4, 17]))["ids_keep"]
    assert first.shape == (1, 307) and first.dtype == torch.int64
    assert torch.equal(first, again) and not torch.equal(first, other)
    masked = keep_mask(first, 512)
    assert int(masked.sum()) == 512 - 307 and not bool(masked[0, first[0]].any())


def test_variant_presets_and_overrides(teacher_file: Path) -> None:
    expected = {"mam_clap": (0.2, "teacher", 0.0, 1), "supmam": (0.4, "pixels", 0.01, 16),
                "supmam_clap": (0.2, "teacher", 0.0001, 1)}
    for variant, (ratio, target, weight, depth) in expected.items():
        spec = {"name": "supmam", "variant": variant, "decoder": {"dim": 32, "heads": 2, "window": [4, 4]},
                "cls": {"hidden": 32, "num_classes": CLASSES}}
        if target == "teacher":
            spec["teacher"] = {"path": str(teacher_file)}
        obj = build_objective(spec, TINY, FrontendConfig())
        cfg = obj.config
        assert (cfg.mask_ratio, cfg.target, cfg.cls.weight, cfg.decoder.depth) == (ratio, target, weight, depth)
        needs = obj.data_needs()
        assert needs.num_views == 1 and needs.labels == (weight > 0) and needs.waves == (target == "teacher")
        assert needs.num_classes == (CLASSES if weight > 0 else None)
        assert (obj.classifier is None) == (weight == 0)
    obj = objective("supmam", mask_ratio=0.3, decoder={"dim": 32, "heads": 2, "depth": 2})
    assert obj.config.mask_ratio == 0.3 and obj.config.decoder.depth == 2 and obj.config.cls.weight == 0.01


def test_bad_configs_are_one_line_errors(tmp_path: Path) -> None:
    cases = [
        ({"variant": "supmae"}, "objective.variant"),
        ({"variant": "custom", "target": "pixels"}, "objective.mask_ratio"),
        ({"variant": "supmam", "mask_ratio": 1.0}, "objective.mask_ratio"),
        ({"variant": "supmam", "target": "clap"}, "objective.target"),
        ({"variant": "supmam", "cls": {"loss": "focal"}}, "objective.cls.loss"),
        ({"variant": "supmam", "decoder": {"kind": "swin"}}, "objective.decoder.kind"),
        ({"variant": "supmam", "teacher": {"path": "x.pt"}}, "objective.teacher.path"),
        ({"variant": "mam_clap"}, "objective.teacher.path is empty"),
        ({"variant": "mam_clap", "teacher": {"path": str(tmp_path / "absent.pt")}}, "absent.pt"),
        ({"variant": "supmam", "bogus": 1}, "objective.bogus"),
    ]
    for params, needle in cases:
        with pytest.raises(AsitError, match=needle.replace(".", r"\.")) as info:
            build_objective({"name": "supmam", **params}, TINY, FrontendConfig())
        assert "\n" not in str(info.value)
    with pytest.raises(AsitError, match="ViT"):
        build_objective({"name": "supmam"}, ConformerConfig(size="tiny"), FrontendConfig())


def test_missing_teacher_file_names_adapter_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "clap" / "nowhere.pt"
    with pytest.raises(AsitError) as info:
        objective("supmam_clap", teacher=missing)
    assert str(missing) in str(info.value) and "asit-hear" in str(info.value)


# -- (b) the L_target split ------------------------------------------------------------------------------------------
def test_target_loss_with_exact_visible_predictions_is_the_masked_mean() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 6, 4, generator=gen) * 3 + 1
    masked = torch.tensor([[True, False, False, False, True, False], [False, True, False, False, False, True]])
    pred = F.layer_norm(teacher, (4,), eps=1e-6).clone()
    delta = torch.tensor([[1.0, 2.0, 0.0, 1.0], [0.0, 0.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [1.0, 0.0, 0.0, 0.0]])
    pred[masked] += delta
    visible, hidden = split_means(target_errors(pred, teacher, "layernorm"), masked)
    hand = ((1 + 4 + 0 + 1) / 4 + 9 / 4 + 16 / 4 + 1 / 4) / 4
    assert float(visible) == pytest.approx(0.0, abs=1e-10)
    assert float(visible + hidden) == pytest.approx(hand, rel=1e-6)
    # the split is not the overall mean (which would scale the masked error by l_m / N)
    assert float(target_errors(pred, teacher).mean()) == pytest.approx(hand * 4 / 12, rel=1e-6)


def test_target_loss_visible_and_masked_are_separate_means() -> None:
    errors = torch.tensor([[1.0, 2.0, 3.0, 10.0]])
    masked = torch.tensor([[False, False, False, True]])
    visible, hidden = split_means(errors, masked)
    assert float(visible) == pytest.approx(2.0) and float(hidden) == pytest.approx(10.0)
    visible, hidden = split_means(errors, torch.zeros_like(masked))      # mask ratio 0: no masked term
    assert float(visible) == pytest.approx(4.0) and float(hidden) == 0.0


# -- (c) the classifier sees only visible tokens ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_classifier_ignores_masked_patches(mode: str) -> None:
    obj = objective("supmam")
    obj.train(mode == "train")
    batch = make_batch(obj)
    x = batch["views"][:, 0]
    ids = batch["ids_keep"][:, 0]
    masked = keep_mask(ids, 32)
    masked_patch = int(torch.nonzero(masked[0])[0, 0])
    visible_patch = int(ids[0, 0])

    def change(patch: int) -> torch.Tensor:
        y = x.clone()
        t, f = divmod(patch, BINS // 16)
        y[0, 0, t * 16:(t + 1) * 16, f * 16:(f + 1) * 16] += 5.0 * torch.linspace(-1, 1, 256).reshape(16, 16)
        return y

    with torch.no_grad():
        logits = obj.class_logits(obj.encode_visible(x, ids))
        after_masked = obj.class_logits(obj.encode_visible(change(masked_patch), ids))
        after_visible = obj.class_logits(obj.encode_visible(change(visible_patch), ids))
        recon_before = obj.training_losses(batch, PROGRESS)["recon"]
        recon_after = obj.training_losses({**batch, "views": change(masked_patch)[:, None]}, PROGRESS)["recon"]
    assert torch.allclose(logits, after_masked, atol=1e-6, rtol=0)
    assert not torch.allclose(logits, after_visible, atol=1e-4)
    assert float(recon_before) != pytest.approx(float(recon_after))     # the masked patch is a target


# -- (d) soft CE ---------------------------------------------------------------------------------------------------
def test_soft_cross_entropy_on_multi_hot_matches_hand_value() -> None:
    logits = torch.tensor([[10.0, 20.0, 30.0], [5.0, -5.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])        # the second clip has no label: left out
    lse = 3.0 + math.log(1.0 + math.exp(-1.0) + math.exp(-2.0))        # logsumexp(1, 2, 3) after tau = 10
    hand = 0.5 * (lse - 1.0) + 0.5 * (lse - 3.0)
    assert float(classification_loss(logits, labels, 10.0)) == pytest.approx(hand, rel=1e-6)
    assert hand == pytest.approx(1.4076059644, rel=1e-9)
    assert float(classification_loss(logits[:1], labels[:1], 10.0)) == pytest.approx(hand, rel=1e-6)
    # bce_sum: BCE summed over classes, mean over clips (all-zero rows count as negatives)
    z = logits / 10.0
    bce = -(labels * F.logsigmoid(z) + (1 - labels) * F.logsigmoid(-z)).sum(-1).mean()
    assert float(classification_loss(logits, labels, 10.0, "bce_sum")) == pytest.approx(float(bce), rel=1e-6)
    # no labelled clip: zero, still attached to the graph (no DDP unused-parameter surprise)
    empty = classification_loss(logits.requires_grad_(), torch.zeros(2, 3), 10.0)
    assert float(empty.detach()) == 0.0 and empty.requires_grad


# -- (e) the labels reach the branch ---------------------------------------------------------------------------------
def test_permuting_labels_changes_the_classification_loss() -> None:
    obj = objective("supmam")
    batch = make_batch(obj)
    with torch.no_grad():
        base = obj.training_losses(batch, PROGRESS)
        rolled = obj.training_losses({**batch, "labels": batch["labels"].roll(1, dims=0)}, PROGRESS)
    assert float(base["recon"]) == pytest.approx(float(rolled["recon"]))
    assert float(base["cls"]) != pytest.approx(float(rolled["cls"]), rel=1e-4)
    assert float(base["loss"]) != float(rolled["loss"])
    assert float(base["loss"]) == pytest.approx(float(base["recon"] + 0.01 * base["cls"]), rel=1e-6)
    with pytest.raises(AsitError, match="labels"):
        obj.training_losses({k: v for k, v in batch.items() if k != "labels"}, PROGRESS)


# -- (f) the teacher stays frozen ------------------------------------------------------------------------------------
def test_teacher_is_frozen_through_optimizer_steps(teacher_file: Path) -> None:
    obj = objective("supmam_clap", teacher=teacher_file)
    assert obj.teacher is not None
    before = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    encoder_before = obj.encoder.blocks[0].attn.qkv.weight.detach().clone()
    obj.train()
    optimizer = torch.optim.Adam(obj.parameters(), lr=1e-3)           # every parameter offered to the optimizer
    batch = make_batch(obj)
    for _ in range(3):
        optimizer.zero_grad()
        obj.training_losses(batch, PROGRESS)["loss"].backward()
        optimizer.step()
        obj.train()
    assert all(not p.requires_grad and p.grad is None for p in obj.teacher.parameters())
    assert not obj.teacher.training and not any(m.training for m in obj.teacher.modules())
    after = obj.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(encoder_before, obj.encoder.blocks[0].attn.qkv.weight)


def test_teacher_targets_are_aligned_tokens(teacher_file: Path) -> None:
    obj = objective("mam_clap", teacher=teacher_file)
    batch = make_batch(obj)
    targets = obj.teacher_targets(batch["waves"][:, 0], (FRAMES // 16, BINS // 16))
    assert targets.shape == (B, 32, 64) and not targets.requires_grad
    with torch.no_grad():
        terms = obj.training_losses(batch, PROGRESS)
    assert set(terms) == {"loss", "target", "target_visible", "target_masked"}
    assert float(terms["loss"]) == pytest.approx(float(terms["target_visible"] + terms["target_masked"]))


# -- encoder and decoder ---------------------------------------------------------------------------------------------
def test_frozen_sincos_positions_and_plain_export() -> None:
    obj = objective("supmam")
    pos = obj.encoder.pos_embed
    assert not pos.requires_grad
    assert torch.equal(pos[0, 0], torch.zeros(64))
    assert torch.allclose(pos[0, 1:], sincos_2d((4, 8), 64))
    exported = obj.export_encoder("teacher")
    assert type(exported) is AudioViT and exported is obj.encoder
    AudioViT(TINY).load_state_dict(exported.state_dict())
    assert all(k.startswith(("encoder.", "decoder.", "pixel_head.", "classifier.")) for k in obj.state_dict())
    learned = objective("supmam", pos_embed="learned")
    assert learned.encoder.pos_embed.requires_grad


def test_decoder_unshuffle_and_shifted_windows() -> None:
    visible = torch.arange(6, dtype=torch.float32).reshape(1, 3, 2)
    ids = torch.tensor([[0, 2, 5]])
    full = unshuffle(visible, ids, 6, torch.tensor([-1.0, -1.0]))
    assert full[0, :, 0].tolist() == [0.0, -1.0, 2.0, -1.0, -1.0, 4.0]
    config = DecoderConfig(dim=32, heads=2)
    one = MAEDecoder(64, config, (12, 8), depth=1)
    two = MAEDecoder(64, config, (12, 8), depth=2)
    assert [b.shift_size for b in one.blocks] == [(2, 0)]                 # "a single block with shifted attention"
    assert [b.shift_size for b in two.blocks] == [(0, 0), (2, 0)]         # AudioMAE: even unshifted, odd shifted
    ids = torch.from_numpy(np.stack([random_keep_ids(96, 0.4, np.random.default_rng(i)) for i in range(2)]))
    latent = torch.randn(2, 1 + ids.shape[1], 64)
    assert two(latent, ids, (12, 8)).shape == (2, 96, 32)
    with pytest.raises(AsitError, match="decoder.kind: global"):
        MAEDecoder(64, config, (5, 8), depth=1)
    glob = MAEDecoder(64, DecoderConfig(dim=32, heads=2, kind="global"), (5, 8), depth=1)
    ids = torch.from_numpy(random_keep_ids(40, 0.4, np.random.default_rng(0)))[None]
    assert glob(torch.randn(1, 1 + ids.shape[1], 64), ids, (5, 8)).shape == (1, 40, 32)


# -- configs -------------------------------------------------------------------------------------------------------
def test_shipped_configs() -> None:
    expected = {"supmam_base": ("supmam", True), "mam_clap_base": ("mam_clap", False),
                "supmam_clap_base": ("supmam_clap", True), "demo_supmam_tiny": ("supmam", True)}
    for name, (variant, labels) in expected.items():
        config = load_pretrain_config(name)
        assert config.objective["name"] == "supmam" and config.objective["variant"] == variant
        assert config.data.num_views == 1 and config.data.labels == labels
    base = load_pretrain_config("supmam_clap_base")
    assert (base.encoder.trained_frames, base.data.crop_frames, base.data.crop_mode) == (1024, 1024, "none")
    assert base.optim.lr == 2e-4 and base.optim.betas == [0.9, 0.95] and base.optim.clip_grad == 0
    assert base.data.batch_size * 4 == 128
    with pytest.raises(AsitError, match="teacher.path is empty"):      # the user must give a local teacher
        build_objective(base.objective, base.encoder, base.frontend)
    demo = load_pretrain_config("demo_supmam_tiny")
    obj = build_objective(demo.objective, demo.encoder, demo.frontend)
    assert obj.data_needs().num_classes == 7 and obj.data_needs().labels
    assert obj.decoder.grid == (12, 8)


# -- every loss term falls -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["supmam", "supmam_clap"])
def test_every_loss_term_falls(variant: str, teacher_file: Path) -> None:
    obj = objective(variant, teacher=teacher_file if variant == "supmam_clap" else None,
                    decoder={"dim": 32, "heads": 2, "depth": 1})
    obj.train()
    batch = make_batch(obj)
    optimizer = torch.optim.Adam([p for p in obj.parameters() if p.requires_grad], lr=2e-3)
    history = []
    for _ in range(30):
        optimizer.zero_grad()
        terms = obj.training_losses(batch, PROGRESS)
        terms["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    names = ["recon", "cls"] if variant == "supmam" else ["target", "target_visible", "target_masked", "cls"]
    for name in names + ["loss"]:
        first, last = history[0][name], history[-1][name]
        # L_cls is slow at tau = 10 (the logits must grow tenfold): 5 % is the bar for every term
        assert last < 0.95 * first, (name, first, last)
