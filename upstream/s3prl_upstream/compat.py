"""The one place where s3prl 0.4.18 is adapted to today's stack, in-process and without touching site-packages.

s3prl 0.4.18 was written against torchaudio <= 2.1, huggingface_hub < 1.0, torch < 2.6 and Python < 3.10. `install()`
applies the smallest fixes that let its own `run_downstream.py` run unmodified, only inside the process that calls it
(the `asit s3prl` launcher; `asit s3prl-data`, which runs s3prl's KS split). Each shim is additive, idempotent and
listed in `SHIMS` with the reason it exists:

- `collections.Mapping` / `collections.MutableMapping`: catalyst 21.5 (the newest catalyst pip can install; s3prl's
  speech_commands downstream imports its `DistributedSamplerWrapper`) uses the aliases Python 3.10 removed. They
  are set to the very same `collections.abc` classes, so nothing else changes meaning.
- `torchaudio.set_audio_backend`: removed in torchaudio 2.9, called by `run_downstream.main` and at import time by
  several s3prl upstreams. torchaudio 2.9 has a single I/O path (torchcodec), so a no-op is exact.
- `torchaudio.sox_effects`: removed in torchaudio 2.9; imported by `s3prl.hub` (mos_prediction) and used by the
  speech_commands reader with the chain `channels 1`, `rate 16000`, `gain -3.0`. Those three effects (and only
  those) are implemented here with soundfile + torchaudio's resampler; any other effect raises, so a downstream
  relying on e.g. `vad` fails loudly instead of silently reading different audio.
- `huggingface_hub.HfFolder` / `huggingface_hub.Repository`: removed in huggingface_hub 1.0 but imported at the top
  of `run_downstream.py` and `downstream/runner.py`. They are only used by `--hub huggingface` and
  `--push_to_hf_hub`, which the launcher refuses; placeholders that raise on use keep the imports working.
- `tensorboard.compat.notf`: `import s3prl` imports `torch.utils.tensorboard`, which imports all of TensorFlow when
  it is installed (the HEAR extra needs it): about half of s3prl's start-up time, plus TensorFlow's log lines, for
  nothing (s3prl logs through tensorboardX). An (empty) module of this name is TensorBoard's own switch to use its
  bundled TensorFlow stub instead; TensorFlow itself stays importable.
- `torch.load` of s3prl's own `states-*.ckpt`: since torch 2.6 `weights_only=True` is the default and those files
  pickle the run's `argparse.Namespace`. Only that class is allow-listed (`torch.serialization.add_safe_globals`);
  `weights_only` itself stays on.

`use_voxceleb1_cache(root)` is separate because it is configuration rather than a fix: s3prl's voxceleb1 reader
caches its file lists in `site-packages/s3prl/downstream/voxceleb1/.cache/{train,dev,test}.pkl` and reuses them even
when `file_path` or the split file change. The reader class is swapped (in s3prl's expert module, in-process) for a
subclass that keys the cache by the resolved data folder and the split file's content, under a folder we choose.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import hashlib
import importlib
import sys
import types
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import AsitError
from ..tensorboard_shim import tensorboard_without_tensorflow

SOX_EFFECTS_MODULE = "torchaudio.sox_effects"


# ------------------------------------------------------------------------------------------- shims


def _collections_aliases() -> None:
    for name in ("Mapping", "MutableMapping"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


def _set_audio_backend() -> None:
    import torchaudio

    if not hasattr(torchaudio, "set_audio_backend"):
        def set_audio_backend(backend: str | None) -> None:
            """No-op: torchaudio >= 2.9 decodes every file through torchcodec."""

        torchaudio.set_audio_backend = set_audio_backend  # type: ignore[attr-defined]


def _apply_effects(wave: torch.Tensor, sample_rate: int, effects: Sequence[Sequence[str]]
                   ) -> tuple[torch.Tensor, int]:
    """The sox effects s3prl's KS/SID readers use, on a float waveform [channels, samples]."""
    from ..frontend import resample

    for effect in effects:
        name, *params = [str(p) for p in effect]
        if name == "channels" and len(params) == 1:
            wanted = int(params[0])
            if wanted == 1:
                wave = wave.mean(dim=0, keepdim=True)        # sox mixes down by averaging the channels
            elif wanted != wave.shape[0]:
                raise NotImplementedError(f"sox effect 'channels {wanted}' on {wave.shape[0]}-channel audio")
        elif name == "rate" and len(params) == 1:
            target = int(float(params[0]))
            wave, sample_rate = resample(wave, sample_rate, target), target
        elif name == "gain" and len(params) == 1:
            wave = wave * 10.0 ** (float(params[0]) / 20.0)
        else:
            raise NotImplementedError(
                f"sox effect {' '.join([name, *params])!r} is not provided by asit-hear's torchaudio.sox_effects "
                "shim (torchaudio >= 2.9 has no sox); supported: channels 1, rate N, gain dB")
    return wave, sample_rate


def _sox_effects_module() -> types.ModuleType:
    module = types.ModuleType(SOX_EFFECTS_MODULE, "asit-hear stand-in for torchaudio.sox_effects (removed in 2.9): "
                              "channels, rate and gain only.")

    def apply_effects_tensor(tensor: torch.Tensor, sample_rate: int, effects: Sequence[Sequence[str]],
                             channels_first: bool = True) -> tuple[torch.Tensor, int]:
        wave = tensor if channels_first else tensor.transpose(0, 1)
        wave, rate = _apply_effects(wave.to(torch.float32), int(sample_rate), effects)
        return (wave if channels_first else wave.transpose(0, 1)), rate

    def apply_effects_file(path: Any, effects: Sequence[Sequence[str]], normalize: bool = True,
                           channels_first: bool = True, format: str | None = None) -> tuple[torch.Tensor, int]:
        from ..frontend import load_audio

        if not normalize:
            raise NotImplementedError("apply_effects_file(normalize=False) is not provided by the shim")
        wave, rate = load_audio(str(path))                    # float32 [channels, samples], like sox -t f32
        return apply_effects_tensor(wave, rate, effects, channels_first)

    module.apply_effects_tensor = apply_effects_tensor  # type: ignore[attr-defined]
    module.apply_effects_file = apply_effects_file  # type: ignore[attr-defined]
    module.__asit_shim__ = True  # type: ignore[attr-defined]
    return module


def _sox_effects() -> None:
    import torchaudio

    try:
        importlib.import_module(SOX_EFFECTS_MODULE)
        return                                                  # a torchaudio that still has sox: keep it
    except ImportError:
        pass
    module = _sox_effects_module()
    sys.modules[SOX_EFFECTS_MODULE] = module
    torchaudio.sox_effects = module  # type: ignore[attr-defined]


class _RemovedFromHuggingfaceHub:
    """Placeholder for a class huggingface_hub >= 1.0 removed; s3prl only uses it for Hub upload/download."""

    _name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._fail()

    @classmethod
    def _fail(cls, *args: Any, **kwargs: Any) -> None:
        raise AsitError(f"huggingface_hub.{cls._name} no longer exists (huggingface_hub >= 1.0); s3prl's "
                        "--hub huggingface and --push_to_hf_hub cannot be used with this stack")

    get_token = save_token = delete_token = _fail


def _huggingface_hub_names() -> None:
    import huggingface_hub

    for name in ("HfFolder", "Repository"):
        if not hasattr(huggingface_hub, name):
            setattr(huggingface_hub, name, type(name, (_RemovedFromHuggingfaceHub,), {"_name": name}))


def _torch_load_allow_list() -> None:
    torch.serialization.add_safe_globals([argparse.Namespace])


# name -> (function, why); `install` applies them in this order
SHIMS: dict[str, tuple[Callable[[], None], str]] = {
    "collections_aliases": (_collections_aliases, "catalyst 21.5 uses collections.Mapping/MutableMapping"),
    "set_audio_backend": (_set_audio_backend, "torchaudio 2.9 removed set_audio_backend"),
    "sox_effects": (_sox_effects, "torchaudio 2.9 removed sox_effects (KS reader: channels/rate/gain)"),
    "huggingface_hub_names": (_huggingface_hub_names, "huggingface_hub 1.0 removed HfFolder and Repository"),
    "tensorboard_without_tensorflow": (tensorboard_without_tensorflow, "s3prl's import pulls in all of TensorFlow"),
    "torch_load_allow_list": (_torch_load_allow_list, "s3prl checkpoints pickle argparse.Namespace"),
}
_installed: list[str] = []


def install() -> list[str]:
    """Apply every shim (idempotent); call before importing s3prl. Returns the names applied so far."""
    for name, (shim, _) in SHIMS.items():
        if name not in _installed:
            shim()
            _installed.append(name)
    return list(_installed)


# -------------------------------------------------------------------------------- voxceleb1 cache


def voxceleb1_cache_key(file_path: str | Path, meta_data: str | Path) -> str:
    """What s3prl's voxceleb1 file lists depend on: the data folder (resolved) and the split file's content."""
    meta = Path(meta_data)
    if not meta.is_file():
        raise AsitError(f"voxceleb1 meta_data {meta} does not exist (config downstream_expert.datarc.meta_data)")
    digest = hashlib.sha1(str(Path(file_path).resolve()).encode())
    digest.update(b"\0")
    digest.update(meta.read_bytes())
    return digest.hexdigest()[:16]


def use_voxceleb1_cache(root: str | Path) -> None:
    """Make s3prl's voxceleb1 downstream cache its file lists under `root/<key>/` (see the module docstring)."""
    import s3prl.downstream.voxceleb1.dataset as vox_dataset
    import s3prl.downstream.voxceleb1.expert as vox_expert

    original = getattr(vox_expert.SpeakerClassifiDataset, "__asit_original__", vox_expert.SpeakerClassifiDataset)
    cache_root = Path(root)

    class KeyedCacheSpeakerClassifiDataset(original):  # type: ignore[misc, valid-type]
        __asit_original__ = original

        def __init__(self, mode: str, file_path: Any, meta_data: Any, max_timestep: Any = None) -> None:
            folder = cache_root / voxceleb1_cache_key(file_path, meta_data)
            vox_dataset.CACHE_PATH = str(folder) + "/"
            super().__init__(mode, file_path, meta_data, max_timestep)

    vox_expert.SpeakerClassifiDataset = KeyedCacheSpeakerClassifiDataset

