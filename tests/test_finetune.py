"""Finetuning pieces: recipes (Table I), data, augmentation, optimiser groups, schedule, backbones, learning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tasks.api import TASKS, EncoderSpec
from tasks.datasets import Example
from tasks.encoders import load_backbone
from tasks.finetune import (AudioClassifier, ClipDataset, FinetuneModule, _prepare_work_dir, collate_train,
                            eval_chunks, sample_weights)
from tasks.recipes import available_recipes, load_recipe, recipe_digest
from upstream.checkpoint import load_encoder
from upstream.cli import main
from upstream.encoders import AudioViT
from upstream.errors import AsitError
from upstream.frontend import DATASET_STATS, FrontendConfig

from conftest import TINY_ENCODER


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ------------------------------------------------------------------------------------------------------ recipes

TABLE_I = {   # task: (stats, loss, mixup, time mask, freq mask, sampler)
    "as20k": ("audioset", "bce", 0.5, 192, 48, "uniform"),
    "esc50": ("esc50", "ce", 0.0, 96, 24, "uniform"),
    "speechcommands_v2": ("speechcommands_v2", "ce", 0.0, 48, 48, "uniform"),
    "speechcommands_v1": ("speechcommands_v1", "ce", 0.0, 48, 48, "uniform"),
    "voxceleb1": ("voxceleb1", "ce", 0.0, 192, 48, "uniform"),
}


@pytest.mark.parametrize("task", TASKS)
def test_finetune_recipes_hold_the_papers_values(task: str) -> None:
    recipe = load_recipe(task, "finetune")
    stats, loss, mixup, time_mask, freq_mask, sampler = TABLE_I[task]
    assert (recipe.stats, recipe.loss, recipe.mixup, recipe.time_mask, recipe.freq_mask, recipe.sampler) == (
        stats, loss, mixup, time_mask, freq_mask, sampler)
    assert (recipe.epochs, recipe.batch_size, recipe.lr) == (60, 64, 1e-3)          # paper text
    assert recipe.stats in DATASET_STATS
    assert recipe.train_frames % 16 == 0 and recipe.eval_frames % 16 == 0
    assert load_recipe(task, "probe").task == task


def test_input_lengths_follow_the_ast_convention() -> None:
    frames = {t: load_recipe(t, "finetune").train_frames for t in TASKS}
    assert frames == {"as20k": 1024, "esc50": 512, "speechcommands_v2": 128, "speechcommands_v1": 128,
                      "voxceleb1": 400}


def test_recipe_overrides_names_and_errors(tmp_path: Path) -> None:
    assert set(available_recipes()) == {f"{t}_{m}" for t in TASKS for m in ("finetune", "probe")}
    base = load_recipe("esc50", "finetune")
    tuned = load_recipe("esc50", "finetune", overrides=["epochs=2", "lr=5e-4", "layer_decay=0.75"])
    assert (tuned.epochs, tuned.lr, tuned.layer_decay) == (2, 5e-4, 0.75)
    assert recipe_digest(tuned) != recipe_digest(base)
    run_only = load_recipe("esc50", "finetune", overrides=["num_workers=0", "log_every_n_steps=1"])
    assert recipe_digest(run_only) == recipe_digest(base)          # how it runs is not what it computes
    assert recipe_digest(load_recipe("esc50", "finetune", overrides=["precision=bf16-mixed"])) != recipe_digest(base)
    assert load_recipe("esc50", "finetune", overrides={"epochs": 2}) == dataclasses.replace(base, epochs=2)
    with pytest.raises(AsitError, match="unknown config key\\(s\\) epoch"):
        load_recipe("esc50", "finetune", overrides=["epoch=2"])
    with pytest.raises(AsitError, match="recipe loss must be one of ce, bce"):
        load_recipe("esc50", "finetune", overrides=["loss=focal"])
    with pytest.raises(AsitError, match="is for esc50 finetune, not voxceleb1 finetune"):
        load_recipe("voxceleb1", "finetune", "esc50_finetune")
    custom = tmp_path / "mine.yaml"
    custom.write_text("inherit: esc50_finetune\nepochs: 7\n")
    assert load_recipe("esc50", "finetune", str(custom)).epochs == 7
    with pytest.raises(AsitError, match="neither a YAML file nor a shipped recipe"):
        load_recipe("esc50", "finetune", "nope")


def test_cli_prints_the_resolved_recipe_and_checks_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", "as20k", "--print-recipe", "epochs=3", "dataset.missing=error"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "missing: error" in out and "time_mask: 192" in out
    assert main(["finetune", "esc50", "epochs=1"]) == 2
    assert "--encoder and --data are required" in capsys.readouterr().err
    assert main(["probe", "voxceleb1", "--encoder", "x.pt", "--data", ".", "--fold", "1"]) == 2
    assert "--fold applies to esc50 only" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- backbones


def test_backbones_pretrained_scratch_and_drop_path(tiny_encoder_file: Path) -> None:
    original = load_encoder(tiny_encoder_file).encoder.state_dict()
    spec = EncoderSpec("tiny", str(tiny_encoder_file))
    pretrained = load_backbone(spec, seed=0, drop_path=0.2)
    assert pretrained.encoder.config.drop_path_rate == 0.2 and pretrained.init == "pretrained"
    assert all(torch.equal(v, original[k]) for k, v in pretrained.encoder.state_dict().items())
    assert pretrained.frontend == FrontendConfig()                 # the checkpoint's own (pretraining) frontend
    scratch = dataclasses.replace(spec, init="scratch")
    a, b, c = (load_backbone(scratch, seed=s).encoder.state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a), "scratch weights come from the seed"
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], original["blocks.0.attn.qkv.weight"])
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in original.items()}
    assert load_backbone(spec, sample_rate=32000).frontend.sample_rate == 32000
    with pytest.raises(AsitError, match="encoder init must be one of"):
        load_backbone(dataclasses.replace(spec, init="random"))


def test_finetuning_trains_a_loaded_encoder_with_drop_path_on(tiny_encoder_file: Path) -> None:
    backbone = load_backbone(EncoderSpec("tiny", str(tiny_encoder_file)), drop_path=0.5)
    backbone.encoder.eval()                                       # as checkpoint loaders hand encoders over
    module = FinetuneModule(AudioClassifier(backbone.encoder, 3), load_recipe("esc50", "finetune"), False, 3)
    assert all(m.training for m in module.modules())
    x = torch.randn(2, 64, 128)
    torch.manual_seed(0)
    first = module.model(x)
    assert not torch.allclose(first, module.model(x)), "stochastic depth must be active while finetuning"
    module.eval()
    assert torch.equal(module.model(x), module.model(x))


# ----------------------------------------------------------------------------------------------------- data


def test_clip_dataset_crops_pads_and_chunks(tone_folder: Path) -> None:
    paths = sorted(tone_folder.glob("*.wav"))[:3]
    examples = [Example(p, ("a",)) for p in paths]
    cfg = FrontendConfig().with_stats("esc50")
    targets = np.zeros(3, np.int64)
    train = ClipDataset(examples, targets, cfg, 64, train=True)
    evaluation = ClipDataset(examples, targets, cfg, 32, train=False)
    for i in range(3):
        full = train.features(i)
        x, y, index = train[i]
        assert x.shape == (64, 128) and index == i
        if full.shape[0] >= 64:       # a crop of the clip's own frames
            assert any(torch.equal(x, full[o:o + 64]) for o in range(full.shape[0] - 63))
        chunks, _, _ = evaluation[i]
        count = int(np.ceil(full.shape[0] / 32))
        assert chunks.shape == (count, 32, 128)
        assert torch.equal(chunks[:-1].reshape(-1, 128), full[: 32 * (count - 1)])  # consecutive chunks, in order
        assert torch.equal(chunks[-1], full[-32:])                 # the last ends at the clip's end: no padding
    one = ClipDataset(examples, targets, cfg, 4096, train=False)[0][0]
    assert one.shape == (1, 4096, 128) and torch.all(one[0, train.features(0).shape[0]:] == 0)  # padded (mean 0)
    short = ClipDataset(examples, targets, cfg, 4096, train=True)[0][0]
    assert short.shape == (4096, 128) and torch.all(short[-100:] == 0)
    silence = FrontendConfig(pad_with="silence").with_stats("esc50")     # an official ASiT checkpoint's rule
    assert silence.pad_value == pytest.approx((-15.9424 + 6.627) / (2 * 5.358), abs=1e-4)   # log(eps), ESC stats
    for loud in (ClipDataset(examples, targets, silence, 4096, train=False)[0][0][0],
                 ClipDataset(examples, targets, silence, 4096, train=True)[0][0]):
        assert torch.all(loud[-100:] == silence.pad_value)
    assert ClipDataset(examples, targets, cfg, 64, train=True, random_crop=False)[0][0].equal(train.features(0)[:64])


def test_eval_chunks_cover_the_clip_without_near_empty_chunks() -> None:
    feats = torch.arange(803, dtype=torch.float32)[:, None].expand(803, 128)    # an 8.03 s utterance
    chunks = eval_chunks(feats, 400)
    assert chunks.shape == (3, 400, 128)
    assert [int(c[0, 0]) for c in chunks] == [0, 400, 403] and int(chunks[-1, -1, 0]) == 802
    assert torch.equal(eval_chunks(feats[:400], 400), feats[None, :400])        # exact fit: one chunk


def test_the_recipe_loss_is_the_loss_used() -> None:
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    ce, bce = make_module(), make_module(loss="bce")
    assert ce.loss(logits, labels).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, one_hot).item()
    assert bce.loss(logits, labels).item() == pytest.approx(expected)
    with pytest.raises(AsitError, match="loss=ce cannot train the multi-label task as20k: use loss=bce"):
        FinetuneModule(ce.model, load_recipe("as20k", "finetune", overrides=["loss=ce"]), True, 3)


def test_weighted_sampling_weights() -> None:
    multi = np.array([[1, 0], [1, 0], [1, 1]], np.float32)
    np.testing.assert_allclose(sample_weights(multi, True), [1 / 3, 1 / 3, 1 / 3 + 1])
    np.testing.assert_allclose(sample_weights(np.array([0, 0, 0, 1]), False), [1 / 3, 1 / 3, 1 / 3, 1])


# --------------------------------------------------------------------------------------------- module pieces


def make_module(**overrides: object) -> FinetuneModule:
    recipe = load_recipe("esc50", "finetune", overrides={"train_frames": 64, "eval_frames": 64, **overrides})
    torch.manual_seed(0)
    model = AudioClassifier(AudioViT(TINY_ENCODER), 3, recipe.pooling)
    return FinetuneModule(model, recipe, multilabel=recipe.loss == "bce", num_classes=3)


def test_pooling_variants() -> None:
    torch.manual_seed(0)
    encoder = AudioViT(TINY_ENCODER).eval()
    x = torch.randn(2, 64, 128)
    tokens = encoder.forward_features(x.unsqueeze(1))
    mean = AudioClassifier(encoder, 5, "mean").eval()
    torch.testing.assert_close(mean.pooled(x), tokens[:, 1:].mean(1))
    torch.testing.assert_close(AudioClassifier(encoder, 5, "cls").pooled(x), tokens[:, 0])
    both = AudioClassifier(encoder, 5, "mean+cls")
    assert both.pooled(x).shape == (2, 128) and both(x).shape == (2, 5)
    assert mean(torch.randn(2, 96, 128)).shape == (2, 5), "other lengths: pos-embed resampled"


def test_specaugment_masks_bands_with_the_mean_and_mixup_mixes_targets() -> None:
    module = make_module(freq_mask=40, time_mask=30, loss="bce", mixup=1.0)
    torch.manual_seed(3)
    np.random.seed(3)
    x = torch.randn(6, 64, 128) + 5.0
    y = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=torch.float32)
    out, mixed, _ = module.augment(x.clone(), y.clone())
    zero = out == 0
    assert zero.any(), "masks were applied"
    freq_zero = zero.all(dim=1)                       # whole mel bins masked over all frames
    time_zero = zero.all(dim=2)                       # whole frames masked
    assert torch.all(zero == (freq_zero[:, None, :] | time_zero[:, :, None]))
    assert freq_zero.sum(1).max() < 40 and time_zero.sum(1).max() < 30
    lam = (mixed - y.flip(0)) / (y - y.flip(0)).where((y - y.flip(0)) != 0, torch.ones(1))
    assert torch.all((mixed >= 0) & (mixed <= 1)) and not torch.equal(mixed, y)
    # every row is one convex combination lam*y + (1-lam)*y_flipped, with the same lam as the input mix
    for row in range(6):
        ratios = lam[row][(y[row] - y.flip(0)[row]) != 0]
        assert torch.allclose(ratios, ratios[0].expand_as(ratios), atol=1e-5)
        unmasked = ~zero[row]
        expected = ratios[0] * (x[row] - 5) + (1 - ratios[0]) * (x.flip(0)[row] - 5) + 5
        torch.testing.assert_close(out[row][unmasked], expected[unmasked], atol=1e-4, rtol=1e-4)


class _Toy(torch.utils.data.Dataset):
    """Two classes that differ in which mel band is loud."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 64, 128, generator=g) * 0.3
        for i in range(n):
            band = slice(0, 40) if self.y[i] == 0 else slice(88, 128)
            self.x[i, :, band] += 1.5

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return self.x[i], self.y[i], i


def test_finetune_module_learns_with_warmup_cosine_and_layer_decay(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    module = make_module(lr=2e-3, warmup_epochs=2, epochs=12, min_lr=1e-5, layer_decay=0.5, freq_mask=0,
                         time_mask=0, drop_path=0.0)
    toy = _Toy(16)
    loader = DataLoader(toy, batch_size=8, shuffle=True, collate_fn=collate_train,
                        generator=torch.Generator().manual_seed(0))
    lrs: list[float] = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
            lrs.append(trainer.optimizers[0].param_groups[-1]["lr"])

    trainer = L.Trainer(max_epochs=12, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Spy()],
                        default_root_dir=tmp_path)
    with torch.no_grad():
        before = module.loss(module.model(toy.x), toy.y).item()
    trainer.fit(module, loader)
    module.eval()
    with torch.no_grad():
        logits = module.model(toy.x)
    assert module.loss(logits, toy.y).item() < 0.5 * before
    assert (logits.argmax(1) == toy.y).float().mean() == 1.0
    # schedule: linear warm-up over 2 epochs (4 updates) to lr, then cosine down towards min_lr
    assert lrs[0] == pytest.approx(1e-5) and max(lrs) == pytest.approx(2e-3, rel=0.05)
    assert np.argmax(lrs) in (4, 5) and lrs[-1] < 0.1 * max(lrs)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[5:], lrs[6:])), "cosine decays monotonically"
    # layer-wise decay: patch embed < block 0 < block 1 < head; no weight decay on biases, norms, pos_embed
    groups = trainer.optimizers[0].param_groups
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    enc = module.model.encoder
    scales = [scale_of[id(enc.patch_embed.proj.weight)], scale_of[id(enc.blocks[0].mlp.fc1.weight)],
              scale_of[id(enc.blocks[1].mlp.fc1.weight)], scale_of[id(module.model.head[1].weight)]]
    assert scales == [0.5 ** 3, 0.5 ** 2, 0.5, 1.0]                      # BEiT/MAE: stem, block 1, block 2, head
    assert decay_of[id(enc.pos_embed)] == 0 and decay_of[id(enc.blocks[0].attn.qkv.bias)] == 0
    assert decay_of[id(enc.blocks[0].norm1.weight)] == 0 and decay_of[id(enc.blocks[0].mlp.fc1.weight)] == 0.05


def test_a_work_folder_refuses_to_resume_another_recipe(tmp_path: Path) -> None:
    recipe = load_recipe("esc50", "finetune")
    identity = {"task": "esc50", "encoder": "e.pt", "init": "pretrained", "seed": 0, "parts": {}}
    assert _prepare_work_dir(tmp_path, recipe, identity) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert _prepare_work_dir(tmp_path, recipe, identity) == tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(AsitError, match="holds an interrupted run of another recipe or cell"):
        _prepare_work_dir(tmp_path, dataclasses.replace(recipe, epochs=3), identity)
