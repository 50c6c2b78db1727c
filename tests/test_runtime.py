from __future__ import annotations

import pytest
import torch

from upstream.errors import AsitError
from upstream.frontend import FrontendConfig
from upstream.runtime import EncoderRuntime, RuntimeOptions


def _waves(*seconds: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [0.1 * torch.randn(int(16000 * s), generator=g) for s in seconds]


def test_clip_alone_equals_clip_in_a_batch(tiny_encoder) -> None:
    runtime = EncoderRuntime(tiny_encoder, FrontendConfig(), RuntimeOptions(max_batch_chunks=3))
    waves = _waves(0.3, 2.5, 1.1, 0.05)
    together = runtime(waves)
    for i, wave in enumerate(waves):
        alone = runtime([wave])
        n = int(alone.num_columns[0])
        assert int(together.num_columns[i]) == n
        for layer in range(len(together.layers)):
            torch.testing.assert_close(together.hidden_states[layer][i, :n], alone.hidden_states[layer][0, :n],
                                       atol=1e-5, rtol=1e-5)
            assert together.hidden_states[layer][i, n:].abs().sum() == 0


def test_long_audio_is_chunked_at_the_trained_length(tiny_encoder) -> None:
    runtime = EncoderRuntime(tiny_encoder, FrontendConfig())          # 64 frames = 4 columns per chunk
    long = _waves(3.0)[0]
    out = runtime([long])
    frames = FrontendConfig().num_frames(long.numel())
    assert int(out.num_frames[0]) == frames and int(out.num_columns[0]) == -(-frames // 16)
    # the first chunk sees exactly the first 64 frames: equal to encoding that prefix alone
    prefix = runtime.features([long])[0][:64]
    first = runtime.forward_features([prefix], [runtime.depth])
    torch.testing.assert_close(out.hidden_states[-1][0, :4], first.hidden_states[0][0, :4])


def test_columns_are_the_mean_of_frequency_patches(tiny_encoder) -> None:
    runtime = EncoderRuntime(tiny_encoder, FrontendConfig())
    wave = _waves(0.64)[0]
    feats = runtime.features([wave])[0]
    x = torch.nn.functional.pad(feats, (0, 0, 0, 64 - feats.shape[0]))[None, None]
    tokens = tiny_encoder.forward_features(x)[0, 1:].reshape(4, 8, -1)
    out = runtime([wave], layers=[-1])
    torch.testing.assert_close(out.hidden_states[0][0], tokens.mean(dim=1)[: int(out.num_columns[0])])
    torch.testing.assert_close(out.mean_pooled(), out.hidden_states[0][0, : int(out.num_columns[0])].mean(0)[None])


def test_column_times_and_layer_selection(tiny_encoder) -> None:
    runtime = EncoderRuntime(tiny_encoder, FrontendConfig())
    assert runtime.column_centers_ms(3).tolist() == pytest.approx([87.5, 247.5, 407.5])
    out = runtime(_waves(1.0), layers=[0, -1])
    assert out.layers == [0, 2] and len(out.hidden_states) == 2
    with pytest.raises(AsitError, match="layer 5 out of range"):
        runtime(_waves(1.0), layers=[5])
    with pytest.raises(AsitError, match="layer 1 was not computed"):
        out.layer(1)


def test_bad_runtime_arguments(tiny_encoder) -> None:
    with pytest.raises(AsitError, match="chunk_frames 70"):
        EncoderRuntime(tiny_encoder, FrontendConfig(), RuntimeOptions(chunk_frames=70))
    with pytest.raises(AsitError, match=r"\[batch, samples\]"):
        EncoderRuntime(tiny_encoder, FrontendConfig())(torch.zeros(1, 2, 100))
