"""`asit perf --compare`: the runtime against a plain timm ViT and against the machine's matmul peak, in one process.

Cases, timed in interleaved repeats (every case once per round, so drifting load or clocks hit all of them alike):

- `timm_fp32`, `timm_bf16`: timm's `VisionTransformer.forward_features` with the same size and weights (the
  positional grid resampled by timm to the input) on one fbank per clip, padded to AST's 1024 frames (or the clip's
  length rounded up to the patch when longer): how the field usually feeds a 10 s clip to a ViT. The fbanks are made
  before timing; bf16 is plain `torch.autocast`.
- `runtime_fp32`, `runtime_bf16` (and `…_short` on clips of `short_seconds`): `EncoderRuntime(waves)` with the
  given `padding` and otherwise default options, every layer kept, its frontend included in the time.
- `matmul_fp32_N`, `matmul_bf16_N`: N×N matmuls; the largest rate over N is the peak the runtime is measured against.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one untimed call (matmuls, convolutions and
attention; elementwise work is not counted). `audio_flops` scales a runtime case's count by the fraction of the frames
it encoded that hold audio, so padding counts as waste.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from upstream.encoders import build_encoder
from upstream.encoders.vit import AudioViT
from upstream.errors import AsitError
from upstream.runtime import EncoderRuntime, RuntimeOptions

from .perf import BenchModel, _identity, _sync, bench_device, bench_model, encoder_config, environment, write_report

AST_FRAMES = 1024          # AST / SSAST / most audio ViTs feed a 10 s clip as 1024 frames
MATMUL_SIZES = (2048, 4096)


def plain_timm(encoder: AudioViT, frames: int) -> VisionTransformer:
    """timm's own ViT of the encoder's size holding its weights, for inputs of `frames` frames."""
    cfg = encoder.config
    vit = VisionTransformer(img_size=(frames, cfg.num_mel_bins), patch_size=cfg.patch_size, in_chans=1,
                            num_classes=0, global_pool="", embed_dim=cfg.embed_dim, depth=cfg.depth,
                            num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
                            norm_layer=partial(nn.LayerNorm, eps=1e-6))
    state = dict(encoder.state_dict())
    state["pos_embed"] = resample_abs_pos_embed(
        state["pos_embed"], new_size=[frames // cfg.patch_size, cfg.freq_patches],
        old_size=[cfg.trained_frames // cfg.patch_size, cfg.freq_patches], num_prefix_tokens=1)
    vit.load_state_dict(state)
    return vit.eval()


def vit_model(model: str) -> BenchModel:
    """A benchmark model whose encoder is a ViT (the only kind timm's VisionTransformer can stand beside)."""
    spec = bench_model(model)
    if spec.encoder.get("arch") != "vit":
        raise AsitError(f"asit perf --compare measures against timm's ViT; {model!r} is not a ViT model")
    return spec


def _count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def _autocast(device: torch.device, precision: str):  # type: ignore[no-untyped-def]
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compare(model: str, device: torch.device, *, seconds: float = 10.0, short_seconds: float = 1.0, batch: int = 4,
            repeats: int = 5, matmul_sizes: tuple[int, ...] = MATMUL_SIZES, padding: str = "step") -> dict[str, Any]:
    """One model's cases, timed in `repeats` interleaved rounds after one warm-up round."""
    spec = vit_model(model)
    torch.manual_seed(0)
    encoder = build_encoder(encoder_config(model, drop_path_rate=0.0)).to(device).eval()
    runtimes = {p: EncoderRuntime(encoder, spec.frontend, RuntimeOptions(precision=p, padding=padding)).to(device)
                for p in ("fp32", "bf16")}
    runtime = runtimes["fp32"]
    rate = runtime.sample_rate
    waves = {"": torch.randn(batch, int(seconds * rate), device=device) * 0.1,
             "_short": torch.randn(batch, int(short_seconds * rate), device=device) * 0.1}

    audio_frames = spec.frontend.num_frames(waves[""].shape[1])
    patch = encoder.frames_per_step
    timm_frames = max(AST_FRAMES, patch * math.ceil(audio_frames / patch))
    timm_vit = plain_timm(encoder, timm_frames).to(device)
    fbanks = torch.stack([runtime.frontend.padded(w, timm_frames) for w in waves[""]])[:, None]

    def timm_case(precision: str) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad(), _autocast(device, precision):
                return timm_vit.forward_features(fbanks)
        return run

    cases: dict[str, Callable[[], Any]] = {f"timm_{p}": timm_case(p) for p in ("fp32", "bf16")}
    for p, rt in runtimes.items():
        for suffix, w in waves.items():
            cases[f"runtime_{p}{suffix}"] = partial(rt, w)
    for n in matmul_sizes:
        for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
            cases[f"matmul_{p}_{n}"] = partial(torch.matmul, a, b)

    flops = {name: _count_flops(fn) for name, fn in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(repeats + 1):
        for name, fn in cases.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_:                                   # round 0 warms every case up
                times[name].append(time.perf_counter() - start)

    def encoded_frames(samples: int) -> tuple[int, int]:
        total = spec.frontend.num_frames(samples)
        return total, sum(length for _, length, _ in runtime.chunk_spans(total))

    rows: dict[str, dict[str, Any]] = {}
    for name in cases:
        median = statistics.median(times[name])
        row: dict[str, Any] = {"median_s": median, "times_s": times[name], "flops": flops[name],
                               "flops_per_s": flops[name] / median}
        if not name.startswith("matmul"):
            row["clips_per_s"] = batch / median
        if name.startswith("runtime"):
            held, encoded = encoded_frames(waves["_short" if name.endswith("_short") else ""].shape[1])
            row.update(audio_frames=held, encoded_frames=encoded, audio_flops=flops[name] * held / encoded,
                       audio_flops_per_s=flops[name] * held / encoded / median)
        if name.startswith("timm"):
            row.update(audio_frames=audio_frames, encoded_frames=timm_frames)
        rows[name] = row

    peak = {p: max(rows[f"matmul_{p}_{n}"]["flops_per_s"] for n in matmul_sizes) for p in ("fp32", "bf16")}
    base = rows["timm_fp32"]["clips_per_s"]
    summary = {
        **{f"{name}_vs_timm_fp32": rows[name]["clips_per_s"] / base
           for name in ("timm_bf16", "runtime_fp32", "runtime_bf16")},
        **{f"{name}_fraction_of_{p}_peak": rows[name]["audio_flops_per_s"] / peak[p]
           for p in ("fp32", "bf16") for name in (f"runtime_{p}",)},
        "timm_bf16_fraction_of_bf16_peak": rows["timm_bf16"]["flops_per_s"] / peak["bf16"],
        "runtime_flops_per_clip_vs_timm": flops["runtime_fp32"] / flops["timm_fp32"],
        **{f"short_vs_long_clip_time_{p}": rows[f"runtime_{p}_short"]["median_s"] / rows[f"runtime_{p}"]["median_s"]
           for p in ("fp32", "bf16")},
    }
    return {"bench": "compare", **_identity(model), "batch": batch, "seconds_audio": seconds,
            "short_seconds_audio": short_seconds, "timm_frames": timm_frames, "repeats": repeats,
            "runtime_options": {"padding": runtime.options.padding, "chunk_frames": runtime.chunk_frames,
                                "layers": "all"},
            "peak_flops_per_s": peak, "summary": summary, "cases": rows}


def run_compare(models: list[str], device_name: str, out: Path, *, seconds: float = 10.0, batch: int = 4,
                repeats: int = 5, padding: str = "step") -> dict[str, Any]:
    for model in models:              # every model checked before the first is measured
        vit_model(model)
    device = bench_device(device_name)
    env = environment(device)
    results = []
    for model in models:
        results.append(compare(model, device, seconds=seconds, batch=batch, repeats=repeats, padding=padding))
        print(json.dumps({"model": model, **results[-1]["summary"]}), flush=True)
    return write_report(out, env, results)
