"""The s3prl upstream expert: same features as the shared runtime, s3prl's length contract, padding invariance,
finetuning gradients, options and hub entries. No s3prl import here (see test_s3prl_e2e.py for s3prl's runner)."""

from __future__ import annotations

import math
import types
from pathlib import Path

import pytest
import torch

from upstream.checkpoint import save_encoder
from upstream.encoders import AudioViT
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig, pad_or_crop, resample
from upstream.runtime import load_runtime
from upstream.s3prl_upstream import hubconf
from upstream.s3prl_upstream.expert import UpstreamExpert, batch_width, read_options

from conftest import TINY_ENCODER

RATE = 2560
# 1 s keyword clips, clip lengths around column boundaries, multi-second utterances (several encoder chunks)
LENGTHS = [16000, 15999, 11000, 2561, 2959, 3000, 5120 + 399, 5120 + 400, 40000, 61234]


def waves(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = [torch.arange(n) / 16000 for n in lengths]
    return [0.3 * torch.sin(2 * math.pi * (200 + 300 * i) * x) + 0.05 * torch.randn(len(x), generator=gen)
            for i, x in enumerate(t)]


@pytest.fixture(scope="module")
def expert(tiny_encoder_file: Path) -> UpstreamExpert:
    return UpstreamExpert(tiny_encoder_file).eval()


def test_hidden_states_are_the_runtime_block_outputs(expert: UpstreamExpert, tiny_encoder_file: Path) -> None:
    runtime = load_runtime(str(tiny_encoder_file))        # an independently loaded runtime of the same file
    batch = waves([16000, 40000, 7000])
    with torch.no_grad():
        ours = expert(batch)
        ref = runtime(batch)
    assert len(ours["hidden_states"]) == TINY_ENCODER.depth + 1 == len(ref.hidden_states)
    for mine, theirs in zip(ours["hidden_states"], ref.hidden_states):
        width = theirs.shape[1]
        assert torch.equal(mine[:, :width], theirs)
        assert not mine[:, width:].any()
    assert ours["last_hidden_state"] is ours["hidden_states"][-1]
    # and the runtime's layers are the encoder's: embeddings first, the final-norm block output last
    single = expert([batch[0][:10240]])["hidden_states"]     # 62 frames: one chunk of 64, 4 columns
    fbank = pad_or_crop(runtime.frontend(batch[0][:10240]), 64)
    with torch.no_grad():
        states = expert.runtime.encoder.forward_hidden_states(fbank[None, None])
    for layer, state in enumerate(states):
        columns = state[0, 1:].reshape(4, 8, -1).mean(dim=1)
        torch.testing.assert_close(single[layer][0, :4], columns, rtol=0, atol=1e-6)


def test_lengths_follow_both_s3prl_rules(expert: UpstreamExpert) -> None:
    batch = waves(LENGTHS)
    out = expert.encode(batch)
    hidden = expert(batch)["hidden_states"][-1]
    assert expert.get_downsample_rates("hidden_states") == RATE
    assert hidden.shape[1] == math.ceil(max(LENGTHS) / RATE)           # s3prl.nn's expected width, exactly
    assert abs(hidden.shape[1] - round(max(LENGTHS) / RATE)) <= 1      # run_downstream's check (tolerates 4)
    for b, n in enumerate(LENGTHS):
        valid = int(out.num_columns[b])
        assert max(1, round(n / RATE)) <= valid <= math.ceil(n / RATE), n
        assert hidden[b, :valid].abs().sum(-1).min() > 0                 # every kept column carries features
        assert not hidden[b, valid:].any()
    assert int(out.num_columns[0]) == 7                                 # 1 s = 98 frames = 7 columns
    assert round(16000 / RATE) == 6                                     # of which run_downstream keeps 6


def test_column_counts_stay_within_the_s3prl_rules_for_every_length() -> None:
    """Exhaustive over 0–25 s at both frontend rates: round(T/2560) <= columns <= ceil(T/2560)."""
    for sample_rate in (16000, 32000):
        cfg = FrontendConfig(sample_rate=sample_rate)
        for n in range(1, 400_000):
            columns = -(-cfg.num_frames(n * sample_rate // 16000) // 16)
            assert round(n / RATE) <= columns <= max(1, math.ceil(n / RATE)), (sample_rate, n)
    assert batch_width([2561, 100], RATE) == 2 and batch_width([10], RATE) == 1


def test_a_clip_is_encoded_the_same_alone_and_in_any_batch(expert: UpstreamExpert) -> None:
    batch = waves([16000, 61234, 3000, 40000], seed=3)
    together = expert(batch)["hidden_states"]
    for b, wav in enumerate(batch):
        alone = expert([wav])["hidden_states"]
        for layer in range(len(together)):
            width = alone[layer].shape[1]
            torch.testing.assert_close(together[layer][b, :width], alone[layer][0], rtol=0, atol=1e-5)
            assert not together[layer][b, width:].any()


def test_32khz_checkpoint_gets_resampled_audio_and_the_same_rate(tmp_path: Path) -> None:
    torch.manual_seed(1)
    encoder = AudioViT(TINY_ENCODER).eval()
    path = save_encoder(tmp_path / "enc32.pt", encoder, FrontendConfig(sample_rate=32000))
    expert = UpstreamExpert(path).eval()
    runtime = load_runtime(str(path))
    batch = waves([16000, 40000])
    with torch.no_grad():
        ours = expert(batch)["hidden_states"]
        ref = runtime([resample(w, 16000, 32000) for w in batch]).hidden_states
    assert expert.get_downsample_rates("hidden_states") == RATE
    assert ours[-1].shape[1] == math.ceil(40000 / RATE)
    torch.testing.assert_close(ours[-1][:, :ref[-1].shape[1]], ref[-1], rtol=0, atol=0)


def test_finetuning_gets_gradients_and_frozen_use_builds_no_graph(tiny_encoder_file: Path) -> None:
    expert = UpstreamExpert(tiny_encoder_file).train()
    hidden = expert(waves([16000, 30000]))["hidden_states"]
    sum(h.square().mean() for h in hidden).backward()
    grads = {name: p.grad for name, p in expert.named_parameters()}
    assert grads["runtime.encoder.patch_embed.proj.weight"] is not None
    assert grads["runtime.encoder.patch_embed.proj.weight"].abs().sum() > 0
    assert grads["runtime.encoder.blocks.1.mlp.fc2.weight"].abs().sum() > 0
    with torch.no_grad():
        frozen = expert.eval()(waves([16000]))["hidden_states"]
    assert all(h.grad_fn is None and not h.requires_grad for h in frozen)


def test_model_config_options(tiny_encoder_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "asit.yaml"
    config.write_text("stats: speechcommands_v1\nprecision: bf16\nchunk_frames: 32\n")
    expert = UpstreamExpert(tiny_encoder_file, config)
    assert expert.runtime.frontend.config.mean == -6.702 and expert.runtime.frontend.config.std == 5.448
    assert expert.runtime.precision() == "bf16" and expert.runtime.chunk_frames == 32
    assert read_options(None).which == "teacher"
    config.write_text("stat: speechcommands_v1\n")
    with pytest.raises(AsitError, match=r"asit\.yaml: unknown config key\(s\) stat"):
        UpstreamExpert(tiny_encoder_file, config)
    with pytest.raises(AsitError, match="model_config .*missing.yaml .*does not exist"):
        UpstreamExpert(tiny_encoder_file, tmp_path / "missing.yaml")


def test_hub_entries_check_the_checkpoint_kind(tiny_encoder_file: Path, tmp_path: Path) -> None:
    hub = types.ModuleType("fake_s3prl_hub")
    assert hubconf.register(hub) == ["asit_local", "asit_official"]
    model = hub.asit_local(ckpt=str(tiny_encoder_file), model_config=None, refresh=False)
    assert isinstance(model, UpstreamExpert) and model.source == "export"
    with pytest.raises(AsitError, match="asit_official expects official or state_dict checkpoints.*asit_local"):
        hub.asit_official(ckpt=str(tiny_encoder_file))
    with pytest.raises(AsitError, match="asit_local needs an encoder file: pass it with -k"):
        hub.asit_local(ckpt=None)
    with pytest.raises(AsitError, match="nope.pt does not exist"):
        hub.asit_local(ckpt=str(tmp_path / "nope.pt"))
    # an official-format checkpoint (teacher/student dicts with `backbone.` keys) goes through asit_official
    state = {f"backbone.{k}": v for k, v in AudioViT(TINY_ENCODER).state_dict().items()}
    official = tmp_path / "official.pth"
    torch.save({"teacher": state, "student": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, official)
    model = hub.asit_official(ckpt=str(official))
    assert model.source == "official" and model.runtime.sample_rate == 32000
    with pytest.raises(AsitError, match="asit_local expects export or lightning checkpoints"):
        hub.asit_local(ckpt=str(official))
