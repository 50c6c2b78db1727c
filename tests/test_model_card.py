"""Model cards: `asit export` writes one beside the encoder (what it is, and the result rows of exactly this encoder),
`asit info` prints it, or says how to get one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_ENCODER

from benchmarks.results import ResultsStore, cell_key, make_row
from tasks.api import EncoderSpec, TaskCell, TaskResult
from upstream.checkpoint import load_encoder, save_encoder
from upstream.cli import main
from upstream.encoders import AudioViT
from upstream.frontend import FrontendConfig
from upstream.identity import encoder_identity
from upstream.model_card import card_identity, card_path, matching_rows, render_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = {"source": "/data/unlabeled", "clips": 12, "digest": "d1a7" * 16, "content": "names and sizes only"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports look for a results/ folder in the working directory: work in an empty one."""
    monkeypatch.chdir(tmp_path)


def _export(capsys, *argv: str) -> str:
    assert main(["export", *argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _row(path: Path, identity: str, task: str, value: float, seed: int, *, init: str = "pretrained",
         error: str | None = None, fingerprint: str | None = None) -> dict:
    cell = TaskCell(EncoderSpec("enc", str(path), init), task, "probe", f"{task}/proto", seed=seed, fold=1)
    extra = {"data_fingerprint": {"digest": fingerprint}} if fingerprint else {}
    result = None if error else TaskResult("accuracy", value, extra)
    return make_row(cell, cell_key(cell, identity), identity, result=result, error=error,
                    checkpoint_file_sha256="")


def _result_lines(card: str) -> list[str]:
    return [line for line in card.splitlines() if line.startswith("| ") and not line.startswith("| task ")]


def test_export_writes_a_card_describing_the_encoder(capsys, tmp_path, tiny_encoder_file) -> None:
    out = tmp_path / "encoder.pt"
    printed = _export(capsys, str(tiny_encoder_file), str(out))
    card_file = tmp_path / "encoder.md"
    assert card_path(out) == card_file and card_file.is_file()
    assert str(card_file) in printed and "0 result row(s)" in printed
    card = card_file.read_text()
    identity = encoder_identity(out)
    assert card_identity(card) == identity
    assert f"`{identity[:16]}`" in card and f"full: `{identity}`" in card
    parameters = sum(p.numel() for p in AudioViT(TINY_ENCODER).parameters())
    assert parameters == sum(p.numel() for p in load_encoder(out).encoder.parameters())
    assert f"{parameters:,} parameters" in card
    assert "- **Architecture**: `vit`, size tiny, depth 2, dim 64, heads 2, patch 16" in card
    assert "- **Frontend**: 16000 Hz, 128 mel bins, 25/10 ms, stats audioset" in card
    assert "- **Init**: pretrained" in card
    assert f"- **Exported from**: `{tiny_encoder_file}` (an exported encoder)" in card
    # the conftest export records no pretraining: said so, not guessed
    assert "- **Objective**: not recorded" in card and "- **Pretraining data**: not recorded" in card
    assert "No results recorded for this checkpoint yet: no results store was searched." in card


def test_card_lists_exactly_the_rows_of_this_encoder(capsys, tmp_path, tiny_encoder_file) -> None:
    out = tmp_path / "encoder.pt"
    _export(capsys, str(tiny_encoder_file), str(out))
    identity = encoder_identity(out)
    store = ResultsStore(tmp_path / "results" / "suite.jsonl")      # the default: results/ in the working dir
    mine = [_row(out, identity, "esc50", 0.8125, seed=0, fingerprint="feed" * 16),
            _row(out, identity, "speechcommands_v2", 0.4375, seed=1)]
    others = [_row(out, "0" * 64, "esc50", 0.9921, seed=0),                        # another encoder
              _row(out, identity, "voxceleb1", 0.0, seed=0, error="RuntimeError: boom"),   # failed: not a result
              _row(out, identity, "esc50", 0.1234, seed=5, init="scratch")]        # a floor drawn from this file
    assert store.append_all(mine + others) == (5, 0)
    printed = _export(capsys, str(tiny_encoder_file), str(out))
    assert "2 result row(s)" in printed
    card = card_path(out).read_text()
    lines = _result_lines(card)
    assert len(lines) == 2
    assert lines[0].startswith("| esc50 | esc50/proto | probe | accuracy | 81.25 | 0 | 1 | `feedfeedfeedfeed` | `"
                               + mine[0]["key"][:12])
    assert lines[1].startswith("| speechcommands_v2 | speechcommands_v2/proto | probe | accuracy | 43.75 | 1 | 1 | — |")
    assert "99.21" not in card and "12.34" not in card and "voxceleb1" not in card
    assert "from `results`" in card
    # exporting the file onto itself rewrites its card and keeps its identity and where it came from
    _export(capsys, str(out), str(out))
    assert encoder_identity(out) == identity and len(_result_lines(card_path(out).read_text())) == 2
    assert f"- **Exported from**: `{tiny_encoder_file}`" in card_path(out).read_text()
    # an explicit --results replaces the default; a store without this encoder's rows says where it looked
    other_store = ResultsStore(tmp_path / "elsewhere.jsonl")
    other_store.append(others[0])
    _export(capsys, str(tiny_encoder_file), str(out), "--results", str(other_store.path))
    card = card_path(out).read_text()
    assert _result_lines(card) == []
    assert f"No results recorded for this checkpoint yet in `{other_store.path}`." in card


def test_info_prints_the_card(capsys, tmp_path, tiny_encoder_file) -> None:
    out = tmp_path / "encoder.pt"
    _export(capsys, str(tiny_encoder_file), str(out))
    card = card_path(out).read_text()
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{'path':>12}: {out}\n")        # the existing lines first, unchanged
    assert printed.endswith("\n\n" + card) and "STALE" not in printed
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["card"] == card and info["card_stale"] is False and info["kind"] == "exported encoder"
    # a pretraining run folder: the card of its encoder.pt
    run = tmp_path / "run"
    _export(capsys, str(tiny_encoder_file), str(run / "encoder.pt"))
    assert main(["info", str(run)]) == 0
    assert capsys.readouterr().out.endswith("\n\n" + (run / "encoder.md").read_text())


def test_info_without_a_card_says_how_to_make_one(capsys, tmp_path, tiny_encoder) -> None:
    path = save_encoder(tmp_path / "bare.pt", tiny_encoder, FrontendConfig())
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == (f"{'card':>12}: none (bare.md does not exist beside it); `asit export {path} OUT.pt` writes "
                         "an encoder with its model card OUT.md")
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card"] is None


def test_info_flags_a_card_whose_encoder_was_replaced(capsys, tmp_path, tiny_encoder_file) -> None:
    out = tmp_path / "encoder.pt"
    _export(capsys, str(tiny_encoder_file), str(out))
    written_for = encoder_identity(out)
    torch.manual_seed(1)
    save_encoder(out, AudioViT(TINY_ENCODER).eval(), FrontendConfig())     # e.g. a rerun writing encoder.pt again
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (f"STALE: encoder.md was written for encoder {written_for[:16]}, this file is "
            f"{encoder_identity(out)[:16]}") in printed
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card_stale"] is True


def test_scratch_card_names_the_floor_and_its_seed(capsys, tmp_path, tiny_encoder_file) -> None:
    out = tmp_path / "scratch.pt"
    printed = _export(capsys, str(tiny_encoder_file), str(out), "--scratch", "--seed", "3")
    assert "floor: scratch" in printed
    card = (tmp_path / "scratch.md").read_text()
    assert "- **Init**: scratch, random weights from seed 3" in card
    assert "this encoder was not trained" in card
    identity = encoder_identity(out)
    assert card_identity(card) == identity != encoder_identity(tiny_encoder_file)
    # re-exporting the floor (default --init pretrained) keeps it a floor: its weights are still random
    _export(capsys, str(out), str(tmp_path / "again.pt"))
    again = (tmp_path / "again.md").read_text()
    assert "- **Init**: scratch, random weights from seed 3" in again and card_identity(again) == identity
    _export(capsys, str(tiny_encoder_file), str(tmp_path / "fbank.pt"), "--init", "fbank_stats")
    fbank = (tmp_path / "fbank.md").read_text()
    assert "- **Init**: fbank_stats" in fbank and "`fbank_stats`" in fbank and "; 0 parameters" in fbank


def test_card_shows_the_pretraining_data_fingerprint_and_objective(capsys, tmp_path, tiny_encoder) -> None:
    config = {"seed": 7, "objective": {"name": "asit", "masking": {"ratio": 0.7}, "out_dim": 64},
              "data": {"crop_frames": 64, "batch_size": 4}, "optim": {"lr": 0.005}}
    src = save_encoder(tmp_path / "run" / "encoder.pt", tiny_encoder, FrontendConfig(),
                       {"objective": "asit", "epoch": 3, "global_step": 12, "config": config, "data": DATA})
    _export(capsys, str(src), str(tmp_path / "asit.pt"))
    card = (tmp_path / "asit.md").read_text()
    assert (f"- **Pretraining data**: source `/data/unlabeled`, 12 clips, fingerprint `{DATA['digest']}` (covers "
            "names and sizes only)") in card
    assert ("- **Objective**: asit (masking.ratio 0.7, out_dim 64, seed 7, 64 frames per crop, batch 4 per process, "
            "lr 0.005 per 256 samples)") in card
    assert "- **Pretraining steps**: 12 optimizer steps, epoch counter 3" in card


def test_export_refuses_a_card_name_and_a_missing_store(capsys, tmp_path, tiny_encoder_file) -> None:
    assert main(["export", str(tiny_encoder_file), str(tmp_path / "enc.md")]) == 2
    assert "OUT" in capsys.readouterr().err and not (tmp_path / "enc.md").exists()
    assert main(["export", str(tiny_encoder_file), str(tmp_path / "e.pt"), "--results", "nope.jsonl"]) == 2
    assert capsys.readouterr().err.strip() == "asit export: error: results nope.jsonl does not exist"
    assert not (tmp_path / "e.pt").exists()


def test_render_and_match_are_pure_functions_of_their_inputs() -> None:
    info = {"path": "/x/enc.pt", "arch": "vit", "config": {"depth": 2, "embed_dim": 64, "patch_size": 16},
            "parameters": 10, "frontend": {}, "meta": {}, "identity": ""}
    card = render_card(info, [])
    assert card.startswith("# enc.pt\n") and "- **Identity**: not recorded" in card and card_identity(card) is None
    rows = [{"status": "ok", "checkpoint_sha256": "a", "key": "k2", "task": "t", "protocol": "p", "mode": "m",
             "metric": "accuracy", "value": 0.5, "seed": 1, "fold": None},
            {"status": "ok", "checkpoint_sha256": "a", "key": "k1", "task": "t", "protocol": "p", "mode": "m",
             "metric": "accuracy", "value": 0.25, "seed": 0, "fold": None},
            {"status": "ok", "checkpoint_sha256": "a", "key": "k1", "task": "t", "protocol": "p", "mode": "m",
             "metric": "accuracy", "value": 0.99, "seed": 0, "fold": None}]          # same cell again: first wins
    matched = matching_rows(rows, "a")
    assert [r["key"] for r in matched] == ["k1", "k2"] and matched[0]["value"] == 0.25
    assert matching_rows(rows, "b") == []
    lines = _result_lines(render_card(info, matched))
    assert lines == ["| t | p | m | accuracy | 25.00 | 0 | — | — | `k1` |",
                     "| t | p | m | accuracy | 50.00 | 1 | — | — | `k2` |"]
