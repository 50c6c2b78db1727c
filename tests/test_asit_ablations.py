"""ASiT Table III / §V-B ablations as shipped presets: each changes exactly the component the paper's row removes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upstream.objectives.asit import ASiTConfig, ASiTObjective
from upstream.pretrain import load_pretrain_config
from upstream.schedules import TrainingProgress

PRESETS = {   # name: (masking ratio > 0, aligned, recon, local, global, mAP on AS-20K in the paper)
    "autoencoder": (False, False, 1, 0, 0, 11.2), "global": (False, False, 0, 0, 1, 17.8),
    "local": (True, False, 0, 1, 0, 27.9), "gmml": (True, False, 1, 0, 0, 28.4),
    "local_global": (True, False, 0, 1, 1, 28.8), "recon_global": (True, False, 1, 0, 1, 29.0),
    "recon_local": (True, False, 1, 1, 0, 29.4), "full": (True, False, 1, 1, 1, 31.9),
    "aligned": (True, True, 1, 1, 1, 29.2),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sets_the_rows_components(name: str) -> None:
    masked, aligned, recon, local, global_, _ = PRESETS[name]
    config = load_pretrain_config(f"asit_ablation_{name}")
    objective = config.objective
    weights = {"recon": 1.0, "local": 1.0, "global": 1.0, **objective.get("loss_weights", {})}
    assert (weights["recon"], weights["local"], weights["global"]) == (recon, local, global_)
    assert (objective["masking"]["ratio"] > 0) == masked
    assert objective["masking"].get("aligned", False) == aligned
    assert config.encoder.size == "small" and config.trainer.max_epochs == 10   # the paper's ablation protocol
    assert config.run_dir == f"runs/asit_ablation_{name}"


def _losses(config: ASiTConfig) -> dict[str, torch.Tensor]:
    from conftest import TINY_ENCODER
    torch.manual_seed(0)
    objective = ASiTObjective(config, TINY_ENCODER)
    views = torch.randn(2, 2, 1, 64, 128)
    extras = [objective.view_transform()({"views": v}, np.random.default_rng(i)) for i, v in enumerate(views)]
    batch = {"views": views, **{k: torch.stack([e[k] for e in extras]) for k in extras[0]}}
    return objective.training_losses(batch, TrainingProgress(step=0, total_steps=10, epoch=0, steps_per_epoch=5))


def test_unmasked_autoencoder_reconstructs_every_pixel() -> None:
    """With nothing masked, `recon_on: masked` would train on nothing; the autoencoder row needs `all`."""
    from upstream.masking import MaskingConfig
    unmasked = MaskingConfig(ratio=0.0)
    assert float(_losses(ASiTConfig(masking=unmasked, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16,
                                    recon_hidden_dim=32, recon_bottleneck_dim=16))["loss_recon"]) == 0.0
    everything = _losses(ASiTConfig(masking=unmasked, recon_on="all", out_dim=64, head_hidden_dim=32,
                                    head_bottleneck_dim=16, recon_hidden_dim=32, recon_bottleneck_dim=16))
    assert float(everything["loss_recon"]) > 0.1
    weights = {"recon": 1.0, "local": 0.0, "global": 0.0}
    only = _losses(ASiTConfig(masking=unmasked, recon_on="all", loss_weights=weights, out_dim=64,
                              head_hidden_dim=32, head_bottleneck_dim=16, recon_hidden_dim=32, recon_bottleneck_dim=16))
    torch.testing.assert_close(only["loss"], only["loss_recon"])
