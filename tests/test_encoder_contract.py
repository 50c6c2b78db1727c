"""The encoder contract, run over every registered encoder: whatever the architecture, the runtime, checkpoints,
HEAR, s3prl and finetuning must behave the same way."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import asit_hear
from tasks.finetune import AudioClassifier, adapt_recipe, task_frontend
from tasks.recipes import FinetuneRecipe
from upstream.checkpoint import load_encoder, save_encoder
from upstream.encoders import ARCHS, AudioEncoder, FbankStatsConfig, build_encoder
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig
from upstream.runtime import EncoderRuntime, RuntimeOptions
from upstream.s3prl_upstream.expert import UpstreamExpert

from conftest import TINY_CONFORMER, TINY_ENCODER

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFORMER_FRONTEND = FrontendConfig(num_mel_bins=64, frame_length_ms=64, frame_shift_ms=20, stats="estimate",
                                    mean=-6.0, std=4.0)
TINY = {"vit": (TINY_ENCODER, FrontendConfig()), "conformer": (TINY_CONFORMER, CONFORMER_FRONTEND),
        "fbank_stats": (FbankStatsConfig(trained_frames=64), FrontendConfig())}


def test_every_registered_arch_has_a_tiny_case() -> None:
    assert set(TINY) == set(ARCHS)


@pytest.fixture(params=sorted(TINY))
def case(request: pytest.FixtureRequest) -> tuple[AudioEncoder, FrontendConfig]:
    config, frontend = TINY[request.param]
    torch.manual_seed(0)
    return build_encoder(config).eval(), frontend


@pytest.fixture()
def exported(case, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    encoder, frontend = case
    return save_encoder(tmp_path / f"{encoder.arch}.pt", encoder, frontend)


def _waves(seconds: list[float], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(int(s * 16000), generator=g) for s in seconds]


def test_steps_cover_the_audio_and_layers_differ(case) -> None:  # type: ignore[no-untyped-def]
    encoder, frontend = case
    runtime = EncoderRuntime(encoder, frontend)
    out = runtime(_waves([0.3, 1.7]))
    frames = [frontend.num_frames(int(s * 16000)) for s in (0.3, 1.7)]
    assert out.num_columns.tolist() == [math.ceil(f / encoder.frames_per_step) for f in frames]
    assert len(out.hidden_states) == encoder.depth + 1
    assert out.hidden_states[0].shape == (2, max(out.num_columns), encoder.embed_dim)
    assert not out.hidden_states[-1][0, int(out.num_columns[0]):].any()
    assert encoder.depth == 0 or not torch.allclose(out.hidden_states[0], out.hidden_states[-1])
    assert (out.cls is not None) == encoder.has_cls
    concat = EncoderRuntime(encoder, frontend, RuntimeOptions(columns="concat"))(_waves([0.3, 1.7]))
    assert concat.hidden_states[-1].shape[-1] == encoder.embed_dim * encoder.tokens_per_step
    assert concat.hidden_states[-1].reshape(2, -1, encoder.tokens_per_step, encoder.embed_dim).mean(2).allclose(
        out.hidden_states[-1], atol=1e-5)


@pytest.mark.parametrize("padding", ["chunk", "step"])
def test_a_clip_gives_the_same_features_alone_and_in_a_batch_of_longer_clips(case, padding: str) -> None:  # type: ignore[no-untyped-def]
    encoder, frontend = case
    runtime = EncoderRuntime(encoder, frontend, RuntimeOptions(padding=padding, max_batch_chunks=2))
    waves = _waves([0.5, 2.3, 1.1], seed=1)
    together = runtime(waves)
    for i, wave in enumerate(waves):
        alone = runtime([wave])
        width = int(alone.num_columns[0])
        for layer in range(len(together.layers)):
            torch.testing.assert_close(together.hidden_states[layer][i, :width], alone.hidden_states[layer][0],
                                       rtol=0, atol=1e-5)


def test_step_padding_pays_only_for_the_audio(case) -> None:  # type: ignore[no-untyped-def]
    encoder, frontend = case
    seen: list[int] = []
    per_row = 1 if encoder.arch == "vit" else encoder.frames_per_step       # ViT stem: frames, conformer: steps
    handle = encoder.stem.register_forward_hook(lambda m, i, o: seen.append(int(i[0].shape[-2]) * per_row))
    EncoderRuntime(encoder, frontend, RuntimeOptions(padding="step"))(_waves([0.3]))
    handle.remove()
    frames = frontend.num_frames(4800)
    assert seen == [encoder.frames_per_step * math.ceil(frames / encoder.frames_per_step)]
    assert seen[0] < encoder.trained_frames


def test_export_then_load_gives_identical_outputs(case, exported: Path) -> None:  # type: ignore[no-untyped-def]
    encoder, frontend = case
    loaded = load_encoder(exported)
    assert loaded.encoder.arch == encoder.arch and loaded.frontend == frontend
    assert torch.load(exported, weights_only=True)["arch"] == encoder.arch
    waves = _waves([0.9])
    a = EncoderRuntime(encoder, frontend)(waves)
    b = EncoderRuntime(loaded.encoder, loaded.frontend)(waves)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_hear_timestamps_end_within_two_hops_and_scene_is_the_runtime_mean(case, exported: Path) -> None:  # type: ignore[no-untyped-def]
    model = asit_hear.load_model(str(exported))
    for seconds in (1.07, 1.98):
        audio = torch.stack(_waves([seconds, seconds], seed=2))
        emb, times = asit_hear.get_timestamp_embeddings(audio, model)
        assert emb.shape[:2] == times.shape and emb.shape[2] == model.timestamp_embedding_size
        hop = float(torch.diff(times[0]).max())
        assert hop <= 50.0 and abs(float(times[0, -1]) - seconds * 1000) <= 2 * hop
        assert torch.all(torch.diff(times[0]) > 0)
    audio = torch.stack(_waves([1.3, 1.3], seed=3))
    scene = asit_hear.get_scene_embeddings(audio, model)
    assert scene.shape == (2, model.scene_embedding_size)
    torch.testing.assert_close(scene, model.runtime(list(audio), [-1]).mean_pooled(), rtol=0, atol=0)


def test_s3prl_downsample_rate_and_lengths(case, exported: Path) -> None:  # type: ignore[no-untyped-def]
    encoder, frontend = case
    expert = UpstreamExpert(str(exported))
    rate = expert.get_downsample_rates("hidden_states")
    assert rate == encoder.frames_per_step * frontend.hop_samples
    lengths = [16000, 16000 + rate // 2 + 100, 3 * rate + 700, 24000]
    out = expert.encode(_waves([n / 16000 for n in lengths]))
    for b, n in enumerate(lengths):
        assert round(n / rate) <= int(out.num_columns[b]) <= math.ceil(n / rate), n
    hidden = expert(_waves([n / 16000 for n in lengths]))["hidden_states"]
    assert len(hidden) == encoder.depth + 1 and hidden[0].shape[1] == math.ceil(max(lengths) / rate)


def test_the_s3prl_length_rule_holds_for_every_length(case, exported: Path) -> None:  # type: ignore[no-untyped-def]
    """round(T / rate) <= steps <= ceil(T / rate) for every T up to 3 s, after the expert's own end padding."""
    encoder, frontend = case
    expert = UpstreamExpert(str(exported))
    p, rate = encoder.frames_per_step, expert.get_downsample_rates("hidden_states")
    silence = torch.zeros(48_000)
    for n in range(1, 48_000):
        padded = expert.pad_to_rule(silence[:n], n)
        steps = -(-frontend.num_frames(int(padded.shape[-1])) // p)
        assert round(n / rate) <= steps <= max(1, math.ceil(n / rate)), n


def test_finetuning_takes_one_step_through_the_shared_pooling(case) -> None:  # type: ignore[no-untyped-def]
    encoder, frontend = case
    recipe = adapt_recipe(FinetuneRecipe(task="esc50", train_frames=128, eval_frames=128, freq_mask=48,
                                         time_mask=40), frontend, encoder.frames_per_step)
    scale = 10.0 / frontend.frame_shift_ms
    assert recipe.train_frames == encoder.frames_per_step * math.ceil(128 * scale / encoder.frames_per_step)
    assert recipe.freq_mask == round(48 * frontend.num_mel_bins / 128) and recipe.time_mask == round(40 * scale)
    assert task_frontend(frontend, "esc50").stats == ("esc50" if frontend.table_i_geometry else frontend.stats)
    model = AudioClassifier(encoder.train(), num_classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, recipe.train_frames, frontend.num_mel_bins)
    y = torch.tensor([0, 1, 2, 0])
    before = [p.detach().clone() for p in encoder.parameters()]
    head = model.head[-1].weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert math.isfinite(float(loss.detach())) and not torch.equal(head, model.head[-1].weight)
    # every weight of the encoder trains (fbank_stats has none)
    assert len(before) == (0 if encoder.arch == "fbank_stats" else len(list(encoder.parameters())))
    assert all(not torch.equal(a, b) for a, b in zip(before[:1] + before[-1:], [*encoder.parameters()][:1] +
                                                                              [*encoder.parameters()][-1:]))
    # the classifier's features are the runtime's mean-pooled last layer on the same input
    model.eval()
    runtime = EncoderRuntime(encoder, frontend, RuntimeOptions(chunk_frames=recipe.train_frames))
    expected = runtime.forward_features([x[0]], [encoder.depth]).mean_pooled()
    torch.testing.assert_close(model.pooled(x[:1]), expected, rtol=1e-5, atol=1e-5)


def test_cls_pooling_is_refused_without_a_cls_token(tmp_path: Path) -> None:
    encoder = build_encoder(TINY_CONFORMER)
    with pytest.raises(AsitError, match="needs a CLS token"):
        EncoderRuntime(encoder, CONFORMER_FRONTEND, RuntimeOptions(pooling="cls"))
    path = save_encoder(tmp_path / "c.pt", encoder, CONFORMER_FRONTEND)
    with pytest.raises(AsitError, match="needs a CLS token"):
        asit_hear.load_model(str(path), pooling="cls")


def test_unknown_arch_and_mismatched_shapes_are_one_line_errors(tmp_path: Path) -> None:
    encoder = build_encoder(TINY_CONFORMER)
    path = save_encoder(tmp_path / "c.pt", encoder, CONFORMER_FRONTEND)
    data = torch.load(path, weights_only=True)
    data["arch"] = "mamba"
    torch.save(data, tmp_path / "unknown.pt")
    with pytest.raises(AsitError, match=r"unknown\.pt: arch 'mamba' is not a registered encoder"):
        load_encoder(tmp_path / "unknown.pt")
    data = torch.load(path, weights_only=True)
    data["encoder"]["embed_dim"] = 48
    torch.save(data, tmp_path / "shapes.pt")
    with pytest.raises(AsitError, match=r"shapes\.pt does not match the encoder: .*differ in shape: "):
        load_encoder(tmp_path / "shapes.pt")
    data = torch.load(path, weights_only=True)
    del data["state_dict"]
    torch.save(data, tmp_path / "nostate.pt")
    with pytest.raises(AsitError, match=r"nostate\.pt is an encoder export without its 'state_dict' entry"):
        load_encoder(tmp_path / "nostate.pt")


def test_exports_from_before_the_registry_load_as_vit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(TINY_ENCODER)
    path = save_encoder(tmp_path / "v1.pt", encoder, FrontendConfig())
    data = torch.load(path, weights_only=True)
    data["version"] = 1
    del data["arch"]
    del data["encoder"]["arch"]
    torch.save(data, path)
    loaded = load_encoder(path)
    assert loaded.encoder.arch == "vit"
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(),
                                                 loaded.encoder.state_dict().values()))


def test_table_i_statistics_are_refused_for_another_fbank() -> None:
    with pytest.raises(AsitError, match="statistics of the 128-bin"):
        FrontendConfig(num_mel_bins=64, frame_length_ms=64, frame_shift_ms=20, stats="esc50")
    assert np.isclose(CONFORMER_FRONTEND.mean, -6.0)


def test_conformer_sizes_match_the_paper_parameter_counts() -> None:
    """Paper §2.2: cf_S 18.4M, cf_L 88.1M (encoder + the context encoder's final linear to the 256-d space)."""
    for size, dim, expected in (("small", 256, 18.43e6), ("large", 768, 88.13e6)):
        encoder = build_encoder({"arch": "conformer", "size": size})
        total = sum(p.numel() for p in encoder.parameters()) + dim * 256 + 256
        assert abs(total - expected) < 0.01e6, (size, total)
