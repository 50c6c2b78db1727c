from __future__ import annotations

import argparse
import collections

import pytest
import torch

from upstream.checkpoint import OFFICIAL_SAMPLE_RATE, describe_checkpoint, load_encoder, save_encoder
from upstream.encoders import AudioViT
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig
from upstream.runtime import EncoderRuntime, load_runtime

from conftest import TINY_ENCODER


def _official_checkpoint(student: AudioViT, teacher: AudioViT) -> dict:
    """The layout of the official ASiT main_ASiT.py checkpoint: DDP-prefixed student, plain teacher, heads."""
    def heads(prefix: str) -> dict:
        return {f"{prefix}head_cls.mlp.0.weight": torch.randn(32, 64),
                f"{prefix}head_cls.cls_layer.weight_g": torch.ones(16, 1),
                f"{prefix}head_cls.cls_layer.weight_v": torch.randn(16, 32),
                f"{prefix}head_cls.data_layer.weight_v": torch.randn(8, 32),
                f"{prefix}head_recons.convTrans.weight": torch.randn(64, 1, 16, 16)}
    return {
        "student": collections.OrderedDict({**{f"module.backbone.{k}": v for k, v in student.state_dict().items()},
                                            **heads("module.")}),
        "teacher": collections.OrderedDict({**{f"backbone.{k}": v for k, v in teacher.state_dict().items()},
                                            **heads("")}),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 0.04, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_tiny", data_mean=-4.2677393, data_std=4.5689974, num_frames=64,
                                   output_dir="checkpoints/vit_base/AudioSet2M", lr=5e-4),
        "loss_cls": {"center": torch.zeros(1, 16)},
        "loss_data": {"center": torch.zeros(1, 8)},
        "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 10},
    }


@pytest.fixture()
def official_pair() -> tuple[AudioViT, AudioViT]:
    torch.manual_seed(1)
    return AudioViT(TINY_ENCODER), AudioViT(TINY_ENCODER)


def test_export_then_load_gives_identical_embeddings(tiny_encoder: AudioViT, tmp_path) -> None:
    frontend = FrontendConfig().with_stats("esc50")
    path = save_encoder(tmp_path / "enc.pt", tiny_encoder, frontend, {"note": "test"})
    raw = torch.load(path, weights_only=True)          # the whole file is weights_only-safe
    assert raw["format"] == "asit-hear/encoder" and raw["frontend"]["stats"] == "esc50"
    loaded = load_encoder(path)
    assert loaded.source == "export" and loaded.frontend == frontend and loaded.meta["note"] == "test"
    waves = [torch.randn(12000), torch.randn(30000)]
    a = EncoderRuntime(tiny_encoder, frontend)(waves)
    b = load_runtime(str(path))(waves)
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert torch.equal(x, y)


def test_official_checkpoint_loads_teacher_or_student_backbone(official_pair, tmp_path) -> None:
    student, teacher = official_pair
    path = tmp_path / "checkpoint.pth"
    torch.save(_official_checkpoint(student, teacher), path)
    loaded = load_encoder(path)
    assert loaded.source == "official" and loaded.meta["epoch"] == 100
    assert loaded.frontend.sample_rate == OFFICIAL_SAMPLE_RATE
    assert loaded.frontend.mean == pytest.approx(-4.2677393) and loaded.frontend.std_scale == 2.0
    cfg = loaded.encoder.config
    assert (cfg.embed_dim, cfg.depth, cfg.trained_frames, cfg.patch_size) == (64, 2, 64, 16)
    for name, value in teacher.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[name], value), name
    as_student = load_encoder(path, which="student", sample_rate=16000)
    assert torch.equal(as_student.encoder.pos_embed, student.pos_embed)
    assert as_student.frontend.sample_rate == 16000


def test_mismatched_official_checkpoint_lists_missing_and_unexpected_keys(official_pair, tmp_path) -> None:
    student, teacher = official_pair
    ckpt = _official_checkpoint(student, teacher)
    del ckpt["teacher"]["backbone.blocks.1.mlp.fc2.bias"]
    ckpt["teacher"]["backbone.blocks.1.ls1.gamma"] = torch.ones(64)
    path = tmp_path / "bad.pth"
    torch.save(ckpt, path)
    with pytest.raises(AsitError) as err:
        load_encoder(path)
    message = str(err.value)
    assert "bad.pth" in message and "\n" not in message
    assert "it lacks 1 key(s) of the model, e.g. blocks.1.mlp.fc2.bias" in message
    assert "it holds 1 key(s) the model does not have, e.g. blocks.1.ls1.gamma" in message


def test_shape_mismatch_is_reported(official_pair, tmp_path) -> None:
    student, teacher = official_pair
    ckpt = _official_checkpoint(student, teacher)
    ckpt["teacher"]["backbone.blocks.0.attn.qkv.weight"] = torch.zeros(10, 64)
    torch.save(ckpt, tmp_path / "shape.pth")
    with pytest.raises(AsitError, match=r"1 tensor\(s\) differ in shape: blocks.0.attn.qkv.weight 10x64 in the "
                                        r"checkpoint vs 192x64 in the model"):
        load_encoder(tmp_path / "shape.pth")


class _Opaque:  # a class torch's weights_only unpickler must refuse
    pass


def test_unsafe_or_unknown_files_fail_with_one_line(tmp_path) -> None:
    torch.save({"student": {}, "args": _Opaque()}, tmp_path / "unsafe.pth")
    with pytest.raises(AsitError, match="cannot be loaded safely"):
        load_encoder(tmp_path / "unsafe.pth")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(AsitError, match="text.pt is not a readable torch file"):
        load_encoder(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(AsitError, match="not an encoder export"):
        load_encoder(tmp_path / "other.pt")
    with pytest.raises(AsitError, match="does not exist"):
        load_encoder(tmp_path / "absent.pt")


def test_describe_reports_geometry(tiny_encoder: AudioViT, tmp_path) -> None:
    path = save_encoder(tmp_path / "enc.pt", tiny_encoder, FrontendConfig())
    info = describe_checkpoint(path)
    assert info["kind"] == "exported encoder"
    assert "dim 64, depth 2" in info["encoder"] and info["parameters"] == sum(
        p.numel() for p in tiny_encoder.parameters())
