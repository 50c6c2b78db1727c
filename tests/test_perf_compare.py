"""asit perf --compare: the plain timm ViT it measures against computes what our encoder computes, and the JSON's
ratios, FLOP counts and frame accounting agree with each other (no timed assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.perf_compare import AST_FRAMES, compare, plain_timm
from upstream.cli import main
from upstream.encoders import build_encoder, encoder_config_from_dict


def test_plain_timm_holds_the_encoders_weights_and_computes_the_same_tokens() -> None:
    torch.manual_seed(0)
    encoder = build_encoder(encoder_config_from_dict({"arch": "vit", "size": "tiny", "depth": 2,
                                                      "trained_frames": 64, "drop_path_rate": 0.0})).eval()
    x = torch.randn(2, 1, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(plain_timm(encoder, 64).forward_features(x), encoder.forward_features(x))
        longer = plain_timm(encoder, 128)            # positional grid resampled along time by timm
        assert longer.pos_embed.shape[1] == 1 + 8 * 8
        assert torch.equal(longer.blocks[1].mlp.fc2.weight, encoder.blocks[1].mlp.fc2.weight)


def test_compare_report_is_consistent() -> None:
    row = compare("vit-tiny", torch.device("cpu"), seconds=2.0, short_seconds=0.5, batch=2, repeats=1,
                  matmul_sizes=(64, 128))
    cases, summary = row["cases"], row["summary"]
    assert set(cases) == {"timm_fp32", "timm_bf16", "runtime_fp32", "runtime_bf16", "runtime_fp32_short",
                          "runtime_bf16_short", "matmul_fp32_64", "matmul_bf16_64", "matmul_fp32_128",
                          "matmul_bf16_128"}
    assert cases["matmul_bf16_128"]["flops"] == 2 * 128**3
    assert row["peak_flops_per_s"]["bf16"] == max(cases[f"matmul_bf16_{n}"]["flops_per_s"] for n in (64, 128))
    for name in ("timm_fp32", "runtime_bf16", "runtime_fp32_short"):
        assert cases[name]["clips_per_s"] == pytest.approx(2 / cases[name]["median_s"])
        assert len(cases[name]["times_s"]) == 1
    # a 2 s clip is 198 frames: timm sees AST's 1024, the runtime one chunk (its padding decides how long)
    assert row["timm_frames"] == AST_FRAMES and cases["timm_fp32"]["audio_frames"] == 198
    runtime = cases["runtime_fp32"]
    assert runtime["audio_frames"] == 198 and 198 <= runtime["encoded_frames"] <= 592
    assert runtime["audio_flops"] == pytest.approx(runtime["flops"] * 198 / runtime["encoded_frames"])
    assert cases["runtime_bf16"]["flops"] == runtime["flops"]          # same work, other precision
    assert cases["timm_fp32"]["flops"] > runtime["flops"]              # 1024 frames against at most 592
    assert summary["runtime_bf16_vs_timm_fp32"] == pytest.approx(
        cases["runtime_bf16"]["clips_per_s"] / cases["timm_fp32"]["clips_per_s"])
    assert summary["runtime_bf16_fraction_of_bf16_peak"] == pytest.approx(
        cases["runtime_bf16"]["audio_flops_per_s"] / row["peak_flops_per_s"]["bf16"])
    assert summary["runtime_flops_per_clip_vs_timm"] == pytest.approx(runtime["flops"] / cases["timm_fp32"]["flops"])
    assert summary["short_vs_long_clip_time_bf16"] == pytest.approx(
        cases["runtime_bf16_short"]["median_s"] / cases["runtime_bf16"]["median_s"])


def test_compare_refuses_a_model_that_is_not_a_vit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "compare.json"
    assert main(["perf", "--compare", "--models", "conformer-small", "--out", str(out)]) != 0
    assert "conformer-small" in capsys.readouterr().err and not out.exists()
    # a ViT listed first is not measured (its summary line never printed) before the refusal
    assert main(["perf", "--compare", "--models", "vit-tiny", "conformer-small", "--out", str(out)]) != 0
    printed = capsys.readouterr()
    assert "conformer-small" in printed.err and printed.out == "" and not out.exists()
