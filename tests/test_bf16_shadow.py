"""bf16 inference on cached bf16 weight copies: the same numbers as autocast's own per-call casts, never stale
after the weights change."""

from __future__ import annotations

import pytest
import torch

from upstream.bf16_shadow import Bf16Shadow
from upstream.encoders import build_encoder
from upstream.frontend import FrontendConfig
from upstream.runtime import EncoderRuntime, RuntimeOptions, RuntimeOutput

from conftest import TINY_CONFORMER, TINY_ENCODER

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = {"vit": (TINY_ENCODER, FrontendConfig()),
         "conformer": (TINY_CONFORMER, FrontendConfig(num_mel_bins=64, frame_length_ms=64, frame_shift_ms=20,
                                                      stats="estimate", mean=-6.0, std=4.0))}


def _autocast_reference(runtime: EncoderRuntime, waves: list[torch.Tensor]) -> RuntimeOutput:
    """The same pass with grad enabled: the encoder's own fp32 weights, cast by autocast on every call."""
    feats, frames = runtime.laid_out(waves)
    with torch.enable_grad():
        out = runtime.forward_features(feats, runtime.resolve_layers(None), frames)
    return RuntimeOutput([h.detach() for h in out.hidden_states],
                         None if out.cls is None else [c.detach() for c in out.cls], out.layers, out.num_columns,
                         out.num_frames)


def _assert_equal(a: RuntimeOutput, b: RuntimeOutput) -> None:
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert torch.equal(x, y)
    for x, y in zip(a.cls or [], b.cls or []):
        assert torch.equal(x, y)


@pytest.mark.parametrize("arch", sorted(CASES))
def test_bf16_inference_equals_autocast_bit_for_bit_and_follows_weight_changes(arch: str) -> None:
    config, frontend = CASES[arch]
    torch.manual_seed(0)
    encoder = build_encoder(config).eval()
    runtime = EncoderRuntime(encoder, frontend, RuntimeOptions(precision="bf16", padding="step"))
    waves = [0.1 * torch.randn(n) for n in (4000, 21000)]
    first = runtime(waves)
    _assert_equal(first, _autocast_reference(runtime, waves))
    fp32 = EncoderRuntime(encoder, frontend, RuntimeOptions(precision="fp32", padding="step"))(waves)
    assert not torch.equal(first.hidden_states[-1], fp32.hidden_states[-1])       # bf16 did run

    linear = next(m for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        linear.weight.mul_(1.5)                       # an optimizer step or load_state_dict: in place
    changed = runtime(waves)
    assert not torch.equal(changed.hidden_states[-1], first.hidden_states[-1])
    _assert_equal(changed, _autocast_reference(runtime, waves))

    encoder.load_state_dict({k: v.clone() for k, v in build_encoder(config).state_dict().items()})
    _assert_equal(runtime(waves), _autocast_reference(runtime, waves))


def test_copies_are_made_once_while_the_weights_stay_the_same() -> None:
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    shadow = Bf16Shadow(layer)
    copies = shadow.weights()
    assert set(copies) == {"0.weight", "0.bias"}                     # LayerNorm stays fp32, as under autocast
    assert all(c.dtype == torch.bfloat16 for c in copies.values())
    assert shadow.weights() is copies
    layer[0].weight = torch.nn.Parameter(torch.zeros(4, 4))         # a replaced tensor, same version number
    assert shadow.weights() is not copies and not shadow.weights()["0.weight"].any()
