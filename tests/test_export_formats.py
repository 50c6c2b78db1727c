"""Export formats: safetensors exports (`asit export --format safetensors`, configs in the file's metadata), reading
them wherever an export is taken, and the torch.hub entry points of the top-level hubconf.py."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import asit_hear
from conftest import TINY_ENCODER
from upstream.checkpoint import (EXPORT_FORMAT, EXPORT_VERSION, describe_checkpoint, export_file_format,
                                 is_safetensors, load_encoder, save_encoder)
from upstream.cli import main
from upstream.encoders import AudioViT
from upstream.errors import AsitError
from upstream.frontend import FrontendConfig
from upstream.identity import encoder_identity
from upstream.model_card import card_identity, card_path
from upstream.runtime import EncoderRuntime, load_runtime

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
FRONTEND = FrontendConfig().with_stats("esc50")


def _waves() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(16000, generator=g), torch.randn(9000, generator=g)]


def _same_features(a: str | Path, b: str | Path) -> None:
    waves = _waves()
    out_a, out_b = load_runtime(str(a))(waves), load_runtime(str(b))(waves)
    assert len(out_a.hidden_states) == len(out_b.hidden_states)
    for x, y in zip(out_a.hidden_states, out_b.hidden_states):
        assert torch.equal(x, y)


@pytest.fixture()
def pt_export(tiny_encoder: AudioViT, tmp_path: Path) -> Path:
    return save_encoder(tmp_path / "enc.pt", tiny_encoder, FRONTEND, {"note": "test", "steps": [1, 2]})


def test_safetensors_round_trip_keeps_weights_config_meta_and_identity(tiny_encoder: AudioViT, pt_export: Path,
                                                                         tmp_path: Path) -> None:
    path = save_encoder(tmp_path / "enc.safetensors", tiny_encoder, FRONTEND, {"note": "test", "steps": [1, 2]})
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    assert metadata["format"] == EXPORT_FORMAT and metadata["version"] == str(EXPORT_VERSION)
    assert metadata["arch"] == "vit"
    assert json.loads(metadata["encoder"]) == dataclasses.asdict(tiny_encoder.config)
    assert json.loads(metadata["frontend"]) == dataclasses.asdict(FRONTEND)
    assert json.loads(metadata["meta"]) == {"note": "test", "steps": [1, 2]}
    state = tiny_encoder.state_dict()
    assert tensors.keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(tensors[name], value), name

    loaded = load_encoder(path)
    assert loaded.source == "export" and loaded.frontend == FRONTEND and loaded.meta["note"] == "test"
    assert loaded.encoder.config == tiny_encoder.config
    # identity is about what the encoder computes (upstream/identity.py), so both containers share it
    assert encoder_identity(path) == encoder_identity(pt_export)
    _same_features(pt_export, path)
    a = EncoderRuntime(tiny_encoder, FRONTEND)(_waves())
    b = load_runtime(str(path))(_waves())
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states))
    info = describe_checkpoint(path)
    assert info["format"] == "safetensors" and info["kind"] == "exported encoder"


def test_conformer_round_trips_through_safetensors(tiny_conformer_file: Path, tmp_path: Path) -> None:
    loaded = load_encoder(tiny_conformer_file)
    path = save_encoder(tmp_path / "conformer.safetensors", loaded.encoder, loaded.frontend, loaded.meta)
    assert load_encoder(path).encoder.arch == "conformer"
    assert encoder_identity(path) == encoder_identity(tiny_conformer_file)
    _same_features(tiny_conformer_file, path)


@pytest.mark.parametrize(("name", "requested", "expected"), [
    ("enc.pt", None, "pt"), ("enc", None, "pt"), ("enc.safetensors", None, "safetensors"),
    ("enc.SAFETENSORS", None, "safetensors"), ("enc.bin", "safetensors", "safetensors"), ("enc.bin", "pt", "pt"),
    ("enc.safetensors", "safetensors", "safetensors"), ("enc.pt", "pt", "pt")])
def test_format_follows_the_flag_else_the_name(name: str, requested: str | None, expected: str) -> None:
    assert export_file_format(name, requested) == expected


@pytest.mark.parametrize(("name", "requested"), [("enc.safetensors", "pt"), ("enc.pt", "safetensors"),
                                                 ("enc.pth", "safetensors"), ("enc.ckpt", "safetensors")])
def test_a_format_contradicting_the_name_is_refused(name: str, requested: str) -> None:
    with pytest.raises(AsitError, match=f"format {requested} contradicts the name {name}"):
        export_file_format(name, requested)


def test_cli_exports_safetensors_with_its_model_card(pt_export: Path, tmp_path: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)                     # no results/ folder of the working copy
    out = tmp_path / "out" / "enc.safetensors"      # format from the name
    assert main(["export", str(pt_export), str(out)]) == 0
    assert "(safetensors;" in capsys.readouterr().out
    assert is_safetensors(out) and not is_safetensors(pt_export)
    card = card_path(out)
    assert card == tmp_path / "out" / "enc.md" and card_identity(card.read_text()) == encoder_identity(out)
    assert encoder_identity(out) == encoder_identity(pt_export)
    _same_features(pt_export, out)
    with safe_open(str(out), framework="pt") as handle:
        assert json.loads(handle.metadata()["meta"])["exported_from"] == str(pt_export)

    # --format with a name that says nothing: the content tells the reader it is safetensors
    bare = tmp_path / "enc.bin"
    assert main(["export", str(out), str(bare), "--format", "safetensors"]) == 0
    assert is_safetensors(bare) and load_encoder(bare).source == "export"
    _same_features(pt_export, bare)
    # and back to a torch file
    back = tmp_path / "back.pt"
    assert main(["export", str(bare), str(back)]) == 0
    assert torch.load(back, weights_only=True)["format"] == EXPORT_FORMAT
    assert encoder_identity(back) == encoder_identity(pt_export)


def test_cli_floor_exports_to_safetensors(pt_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "floor.safetensors"
    assert main(["export", str(pt_export), str(out), "--init", "fbank_stats"]) == 0
    loaded = load_encoder(out)
    assert loaded.encoder.arch == "fbank_stats" and loaded.meta["init"] == "fbank_stats"


def test_cli_refuses_format_contradictions_before_loading(tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    absent = tmp_path / "absent.pt"             # never read: the contradiction is refused first
    assert main(["export", str(absent), str(tmp_path / "enc.safetensors"), "--format", "pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asit export: error: --format pt contradicts the name ") and "enc.safetensors" in err
    assert "\n" not in err
    assert main(["export", str(absent), str(tmp_path / "enc.pt"), "--format", "safetensors"]) == 2
    assert "--format safetensors contradicts the name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(absent), str(tmp_path / "enc.onnx"), "--format", "onnx"])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    assert not list(tmp_path.glob("enc*"))


def test_corrupt_or_foreign_files_fail_naming_the_file(pt_export: Path, tmp_path: Path, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    good = save_encoder(tmp_path / "good.safetensors", load_encoder(pt_export).encoder, FRONTEND)
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not safetensors at all")
    with pytest.raises(AsitError, match=r"checkpoint .*corrupt.safetensors is not a readable safetensors file"):
        load_encoder(corrupt)
    with pytest.raises(AsitError, match="corrupt.safetensors is not a readable safetensors file"):
        asit_hear.load_model(str(corrupt))
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(corrupt), str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "corrupt.safetensors is not a readable safetensors file" in err and "\n" not in err.strip()

    truncated = tmp_path / "truncated.bin"          # header intact, tensors cut: read as safetensors by content
    truncated.write_bytes(data[:-100])
    assert is_safetensors(truncated)
    with pytest.raises(AsitError, match="truncated.bin is not a readable safetensors file"):
        load_encoder(truncated)
    neither = tmp_path / "neither.bin"
    neither.write_bytes(b"hello, not a model")
    with pytest.raises(AsitError, match="neither.bin is not a readable torch file or safetensors file"):
        load_encoder(neither)

    bad_json = tmp_path / "bad_json.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad_json), metadata={"format": EXPORT_FORMAT, "version": "2",
                                                             "encoder": "{not json", "frontend": "{}", "meta": "{}"})
    with pytest.raises(AsitError, match="bad_json.safetensors: its 'encoder' metadata is not JSON"):
        load_encoder(bad_json)
    foreign = tmp_path / "foreign.safetensors"     # a safetensors file of something else
    save_file({"weights": torch.zeros(1)}, str(foreign))
    with pytest.raises(AsitError, match="foreign.safetensors is not an encoder export"):
        load_encoder(foreign)


def test_bare_backbone_in_safetensors_loads_like_a_bare_state_dict(tiny_encoder: AudioViT, tmp_path: Path) -> None:
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_encoder.state_dict().items()}, str(path))
    loaded = load_encoder(path)
    assert loaded.source == "state_dict" and loaded.encoder.config.trained_frames == TINY_ENCODER.trained_frames


def test_torch_hub_hear_model_matches_load_model(pt_export: Path, tmp_path: Path) -> None:
    path = save_encoder(tmp_path / "hub.safetensors", load_encoder(pt_export).encoder, FRONTEND)
    audio = torch.rand(2, 16000, generator=torch.Generator().manual_seed(5)) * 2 - 1
    hub = torch.hub.load(str(REPO), "hear_model", source="local", checkpoint=str(path), pooling="mean+max")
    direct = asit_hear.load_model(str(path), pooling="mean+max")
    assert isinstance(hub, asit_hear.AsitHearModel)
    assert torch.equal(asit_hear.get_scene_embeddings(audio, hub), asit_hear.get_scene_embeddings(audio, direct))
    from_pt = asit_hear.load_model(str(pt_export), pooling="mean+max")
    assert torch.equal(asit_hear.get_scene_embeddings(audio, hub), asit_hear.get_scene_embeddings(audio, from_pt))

    runtime = torch.hub.load(str(REPO), "asit_encoder", source="local", checkpoint=str(pt_export), columns="concat")
    assert isinstance(runtime, EncoderRuntime) and runtime.options.columns == "concat" and not runtime.training
    with pytest.raises(AsitError, match="unknown config key"):
        torch.hub.load(str(REPO), "asit_encoder", source="local", checkpoint=str(pt_export), colums="concat")


def test_hubconf_is_thin_and_declares_what_it_needs() -> None:
    """torch.hub.list/help read GitHub repositories only, so the module is checked here as torch.hub reads it."""
    spec = importlib.util.spec_from_file_location("asit_hubconf", REPO / "hubconf.py")
    assert spec is not None and spec.loader is not None
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert all(importlib.util.find_spec(name) is not None for name in hubconf.dependencies)
    assert "safetensors" in hubconf.dependencies
    for entry in (hubconf.asit_encoder, hubconf.hear_model):
        assert entry.__doc__ and "checkpoint" in inspect.signature(entry).parameters
    tree = ast.parse((REPO / "hubconf.py").read_text())
    imported = {(node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
                for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert imported <= {"__future__", "typing", "asit_hear", "upstream"}


def test_torch_hub_downloads_a_url_once_into_its_cache(pt_export: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    source = save_encoder(tmp_path / "src.safetensors", load_encoder(pt_export).encoder, FRONTEND)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    calls: list[tuple[str, str, str | None]] = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst, hash_prefix))
        shutil.copyfile(source, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    url = "https://example.org/models/asit-tiny-abc123.safetensors"
    first = torch.hub.load(str(REPO), "hear_model", source="local", checkpoint=url, progress=False)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "asit-tiny-abc123.safetensors"
    assert calls == [(url, str(cached), None)] and cached.is_file()
    second = torch.hub.load(str(REPO), "hear_model", source="local", checkpoint=url)
    assert len(calls) == 1                          # the cached file is used
    audio = torch.rand(1, 16000, generator=torch.Generator().manual_seed(6)) * 2 - 1
    assert torch.equal(asit_hear.get_scene_embeddings(audio, first), asit_hear.get_scene_embeddings(audio, second))
    assert torch.equal(asit_hear.get_scene_embeddings(audio, first),
                       asit_hear.get_scene_embeddings(audio, asit_hear.load_model(str(source))))

    cached.unlink()
    torch.hub.load(str(REPO), "asit_encoder", source="local", checkpoint=url, check_hash=True)
    assert calls[-1][2] == "abc123"                 # torch.hub's NAME-<sha256 prefix>.EXT convention
    with pytest.raises(AsitError, match="check_hash needs a file name"):
        torch.hub.load(str(REPO), "asit_encoder", source="local", checkpoint="https://example.org/enc.pt",
                       check_hash=True)

    def failing_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    with pytest.raises(AsitError, match=r"checkpoint https://example.org/other.safetensors could not be downloaded "
                                        r".*network is unreachable"):
        torch.hub.load(str(REPO), "hear_model", source="local", checkpoint="https://example.org/other.safetensors")
