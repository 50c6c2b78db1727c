"""Each s3prl compat shim: what it provides, that it provides nothing more, and that the process is restored after
the test (the shims are meant for the launcher's process only)."""

from __future__ import annotations

import argparse
import collections
import collections.abc
import importlib
import pickle
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from upstream.errors import AsitError
from upstream.s3prl_upstream import compat
from upstream.tensorboard_shim import TENSORBOARD_NO_TF


class NotAllowListed:
    """A class no allow-list mentions: pickling it must still fail to load with weights_only."""


@pytest.fixture()
def shims() -> Iterator[None]:
    """Apply `compat.install()` for one test, then undo every shim."""
    import huggingface_hub

    saved_attrs = {(obj, name): getattr(obj, name) for obj, name in [
        (collections, "Mapping"), (collections, "MutableMapping"), (torchaudio, "set_audio_backend"),
        (torchaudio, "sox_effects"), (huggingface_hub, "HfFolder"), (huggingface_hub, "Repository")]
        if hasattr(obj, name)}
    saved_modules = {name: sys.modules.get(name) for name in (compat.SOX_EFFECTS_MODULE, TENSORBOARD_NO_TF)}
    saved_safe = list(torch.serialization.get_safe_globals())
    saved_installed = list(compat._installed)
    compat._installed.clear()
    compat.install()
    yield
    for obj, name in [(collections, "Mapping"), (collections, "MutableMapping"), (torchaudio, "set_audio_backend"),
                      (torchaudio, "sox_effects"), (huggingface_hub, "HfFolder"), (huggingface_hub, "Repository")]:
        if (obj, name) in saved_attrs:
            setattr(obj, name, saved_attrs[(obj, name)])
        elif hasattr(obj, name):
            delattr(obj, name)
    for name, module in saved_modules.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved_safe)
    compat._installed[:] = saved_installed


def test_install_is_idempotent_and_lists_every_shim(shims: None) -> None:
    assert compat.install() == list(compat.SHIMS) == compat.install()
    assert collections.MutableMapping is collections.abc.MutableMapping
    assert collections.Mapping is collections.abc.Mapping
    torchaudio.set_audio_backend("sox_io")                    # what run_downstream.main calls: a no-op now
    importlib.import_module("tensorboard.compat.notf")        # TensorBoard's switch to its TensorFlow stub
    from catalyst.data.sampler import DistributedSamplerWrapper  # noqa: F401 - imports under Python 3.11


def test_sox_effects_shim_does_the_speech_commands_chain(shims: None, tmp_path: Path) -> None:
    from torchaudio.sox_effects import apply_effects_file, apply_effects_tensor

    rng = np.random.default_rng(0)
    stereo = (0.4 * rng.standard_normal((8000, 2))).clip(-1, 1).astype(np.float32)
    path = tmp_path / "stereo8k.wav"
    sf.write(path, stereo, 8000, subtype="FLOAT")
    wav, rate = apply_effects_file(str(path), [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]])
    expected = torchaudio.functional.resample(torch.from_numpy(stereo.T.copy()).mean(0, keepdim=True), 8000, 16000)
    assert rate == 16000 and wav.shape == (1, 16000)
    torch.testing.assert_close(wav, expected * 10 ** (-3 / 20))
    same, rate = apply_effects_tensor(wav, 16000, [["rate", "16000"]])
    assert rate == 16000 and torch.equal(same, wav)
    with pytest.raises(NotImplementedError, match="sox effect 'vad' is not provided"):
        apply_effects_tensor(wav, 16000, [["vad"]])


def test_removed_huggingface_names_fail_only_when_used(shims: None) -> None:
    from huggingface_hub import HfFolder, Repository

    with pytest.raises(AsitError, match="huggingface_hub.HfFolder no longer exists"):
        HfFolder.get_token()
    with pytest.raises(AsitError, match="huggingface_hub.Repository no longer exists.*--push_to_hf_hub"):
        Repository(local_dir="x")


def test_torch_load_allows_namespace_but_keeps_weights_only(shims: None, tmp_path: Path) -> None:
    path = tmp_path / "states-4.ckpt"
    torch.save({"Args": argparse.Namespace(upstream="asit_local", seed=1337), "Step": 4,
                "Downstream": {"w": torch.ones(2)}}, path)
    loaded = torch.load(path, map_location="cpu")             # s3prl's own call: default weights_only=True
    assert loaded["Args"].upstream == "asit_local" and torch.equal(loaded["Downstream"]["w"], torch.ones(2))
    torch.save({"Args": NotAllowListed()}, tmp_path / "evil.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="NotAllowListed"):
        torch.load(tmp_path / "evil.ckpt", map_location="cpu")


def test_loading_our_checkpoints_keeps_the_allow_list(shims: None, tmp_path: Path) -> None:
    """A sweep trains (loading the encoder through upstream.checkpoint) then evaluates in one process: torch's
    safe_globals context would remove Namespace on exit, and s3prl's `-m evaluate` load would then fail."""
    from upstream.checkpoint import read_checkpoint

    path = tmp_path / "states-4.ckpt"
    torch.save({"Args": argparse.Namespace(upstream="asit_local"), "Step": 4}, path)
    assert read_checkpoint(path)["Step"] == 4
    assert torch.load(path, map_location="cpu")["Args"].upstream == "asit_local"


def test_voxceleb1_cache_key_follows_data_folder_and_split_content(tmp_path: Path) -> None:
    split = tmp_path / "iden_split.txt"
    split.write_text("1 id10001/v/00001.wav\n")
    key = compat.voxceleb1_cache_key(tmp_path / "audio", split)
    assert key == compat.voxceleb1_cache_key(tmp_path / "audio", split)
    assert key != compat.voxceleb1_cache_key(tmp_path / "other", split)
    split.write_text("1 id10001/v/00001.wav\n3 id10001/v/00002.wav\n")
    assert key != compat.voxceleb1_cache_key(tmp_path / "audio", split)
    with pytest.raises(AsitError, match="voxceleb1 meta_data .*missing.txt does not exist"):
        compat.voxceleb1_cache_key(tmp_path / "audio", tmp_path / "missing.txt")
