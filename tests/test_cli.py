from __future__ import annotations

import torch

from upstream.checkpoint import save_encoder
from upstream.cli import main
from upstream.frontend import FrontendConfig


def test_errors_are_one_line_with_the_culprit(capsys, tmp_path) -> None:
    assert main(["info", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"asit info: error: checkpoint {tmp_path / 'nope.pt'} does not exist"
    assert main(["pretrain", "demo_tiny", "data.source=/does/not/exist", f"run_dir={tmp_path}/r"]) == 2
    assert capsys.readouterr().err.strip().endswith("data.source /does/not/exist does not exist")
    assert main(["pretrain", "demo_tiny", "encoder.size=huge"]) == 2
    assert "encoder.size 'huge' unknown" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_export_and_info_round_trip(capsys, tmp_path, tiny_encoder) -> None:
    src = save_encoder(tmp_path / "a.pt", tiny_encoder, FrontendConfig())
    assert main(["export", str(src), str(tmp_path / "b.pt"), "--sample-rate", "32000"]) == 0
    out = torch.load(tmp_path / "b.pt", weights_only=True)
    assert out["frontend"]["sample_rate"] == 32000
    assert torch.equal(out["state_dict"]["pos_embed"], tiny_encoder.pos_embed.detach())
    assert main(["info", str(tmp_path / "b.pt")]) == 0
    assert "exported encoder" in capsys.readouterr().out
