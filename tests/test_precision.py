"""`precision: auto`: bf16 where the hardware has native bf16, fp32 elsewhere; bf16 embeddings stay within cosine
0.999 of fp32 ones; the choice is recorded in result rows."""

from __future__ import annotations

import pytest
import torch

import upstream.precision
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig
from upstream.precision import resolve_precision
from upstream.runtime import EncoderRuntime, RuntimeOptions


def _waves(seconds: float, n: int = 3) -> torch.Tensor:
    return 0.1 * torch.randn(n, int(seconds * 16000), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str) -> None:
    monkeypatch.setattr(upstream.precision, "_cpu_has_fast_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_follows_the_cuda_compute_capability(monkeypatch: pytest.MonkeyPatch, capability, expected) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", "cuda:0") == expected


def test_auto_is_fp32_on_other_devices_and_unknown_values_are_refused() -> None:
    assert resolve_precision("auto", "meta") == "fp32"
    with pytest.raises(AsitError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(AsitError, match="precision must be one of auto, fp32, bf16, got 'half'"):
        RuntimeOptions(precision="half")


@pytest.mark.parametrize("native", [False, True])
def test_runtime_default_is_auto_and_runs_what_it_resolved(tiny_encoder, monkeypatch: pytest.MonkeyPatch,
                                                           native: bool) -> None:
    monkeypatch.setattr(upstream.precision, "_cpu_has_fast_bf16", lambda: native)
    waves = _waves(1.5)
    auto = EncoderRuntime(tiny_encoder, FrontendConfig())
    assert auto.options.precision == "auto" and auto.precision() == ("bf16" if native else "fp32")
    explicit = EncoderRuntime(tiny_encoder, FrontendConfig(), RuntimeOptions(precision=auto.precision()))
    assert torch.equal(auto(waves).hidden_states[-1], explicit(waves).hidden_states[-1])


def test_bf16_embeddings_are_within_cosine_0999_of_fp32(tiny_encoder) -> None:
    waves = _waves(1.5)
    out = {p: EncoderRuntime(tiny_encoder, FrontendConfig(), RuntimeOptions(precision=p))(waves)
           for p in ("fp32", "bf16")}
    assert not torch.equal(out["fp32"].hidden_states[-1], out["bf16"].hidden_states[-1])
    for layer in range(len(out["fp32"].layers)):
        for pooling in ("mean", "mean+std", "cls"):
            a, b = (out[p].scene(layer, pooling) for p in ("fp32", "bf16"))
            assert b.dtype == torch.float32
            assert torch.nn.functional.cosine_similarity(a, b).min().item() >= 0.999, (layer, pooling)
