from __future__ import annotations

import pytest

from upstream.config import parse_overrides
from upstream.errors import AsitError
from upstream.pretrain import load_pretrain_config


def test_shipped_configs_follow_the_paper() -> None:
    base = load_pretrain_config("asit_base")
    assert (base.encoder.embed_dim, base.encoder.depth, base.encoder.num_heads) == (768, 12, 12)
    assert base.data.crop_frames == 592 and base.data.batch_size == 40
    assert (base.frontend.mean, base.frontend.std) == (-4.268, 4.569)
    assert (base.optim.lr, base.optim.weight_decay, base.optim.weight_decay_end) == (5e-4, 0.04, 0.4)
    assert base.objective["masking"]["ratio"] == 0.7 and base.objective["out_dim"] == 8192
    small = load_pretrain_config("asit_small")            # inherits asit_base
    assert small.encoder.embed_dim == 384 and small.optim == base.optim


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_pretrain_config("demo_tiny", ["optim.lr=1e-3", "trainer.devices=2", "frontend.stats=esc50"])
    assert cfg.optim.lr == 0.001 and cfg.trainer.devices == 2 and cfg.frontend.mean == -6.627
    assert parse_overrides(["a.b=[1, 2]", "c=x"]) == {"a": {"b": [1, 2]}, "c": "x"}


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key\\(s\\) optim.lrr"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("trainer.max_epochs=1.5", "trainer.max_epochs must be an integer"),
    ("data.crop_frames=100", "data.crop_frames 100 must be a multiple"),
    ("novalue", "not of the form key.subkey=value"),
])
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(AsitError, match=message):
        load_pretrain_config("demo_tiny", [override])


def test_unknown_config_name_lists_the_shipped_ones() -> None:
    shipped = r"neither a file nor a shipped pretrain config \(acm_sskd_base, asit_ablation_"
    with pytest.raises(AsitError, match=shipped) as info:
        load_pretrain_config("asit_huge")
    for name in ("asit_base", "demo_tiny", "acm_sskd_base", "supmam_base", "wav2vec2_conformer_large"):
        assert name in str(info.value)
