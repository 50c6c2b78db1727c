"""The encoder a task cell starts from: a checkpoint's teacher backbone, or one of its floors.

Every supported file (our export, our Lightning pretraining checkpoint, an official ASiT checkpoint) is read by
`upstream.checkpoint.load_encoder`, which picks the teacher backbone of pretraining checkpoints. `init="scratch"` (the
paper's "Scratch" rows) keeps the file's architecture and frontend and draws fresh weights from the cell's seed;
`init="fbank_stats"` keeps only the frontend (upstream.floors).

A spec naming a HEAR 2021 module (`EncoderSpec.module`) is someone else's model: `load_hear_module` imports it and
calls its `load_model` as heareval's embeddings runner does; it has no backbone for `load_backbone` to return.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from torch import nn

from upstream.checkpoint import load_encoder
from upstream.encoders import AudioEncoder, build_encoder
from upstream.errors import AsitError
from upstream.floors import INITS, initialised
from upstream.frontend import FrontendConfig

from .api import EncoderSpec, hear_module_identity


@dataclass
class Backbone:
    encoder: AudioEncoder
    frontend: FrontendConfig      # the checkpoint's frontend (the one it was pretrained with), at the chosen rate
    source: str                   # export | lightning | official | state_dict
    init: str                     # pretrained | scratch | fbank_stats


def load_backbone(spec: EncoderSpec, *, seed: int = 0, sample_rate: int | None = None,
                  drop_path: float | None = None) -> Backbone:
    """`spec.path`'s teacher backbone (or its floor: a seeded fresh one of the same shape, or fbank_stats), with
    `drop_path` if given."""
    if spec.module:
        raise AsitError(f"encoder {spec.name} is the HEAR module {spec.module}: it has no backbone to finetune or "
                        "re-initialise; HEAR module encoders are evaluated by probe cells only")
    if spec.init not in INITS:
        raise AsitError(f"encoder init must be one of {', '.join(INITS)}, got {spec.init!r}")
    loaded = load_encoder(spec.path, which="teacher", sample_rate=sample_rate)
    config = loaded.encoder.config
    if drop_path is not None:
        config = dataclasses.replace(config, drop_path_rate=float(drop_path))
    if spec.init != "pretrained":
        encoder = initialised(loaded.encoder, spec.init, seed, config)
    elif config != loaded.encoder.config:
        encoder = build_encoder(config)
        encoder.load_state_dict(loaded.encoder.state_dict(), strict=True)
    else:
        encoder = loaded.encoder
    return Backbone(encoder, loaded.frontend, loaded.source, spec.init)


@dataclass
class HearModule:
    """A loaded HEAR 2021 module: the imported module, the model its `load_model` returned, and what rows record."""

    name: str                     # the import name, e.g. "byol_a.hear"
    module: ModuleType
    model: nn.Module
    sample_rate: int              # the model's `sample_rate`: the rate its get_scene_embeddings expects
    scene_embedding_size: int
    version: str | None           # the module's (or its top package's) `__version__`, when it has one
    identity: str                 # tasks.api.hear_module_identity

    def scene_embeddings(self, audio: Any) -> Any:
        """The module's own `get_scene_embeddings(audio [n, samples], model) -> [n, D]`."""
        return self.module.get_scene_embeddings(audio, self.model)


def module_version(module: ModuleType) -> str | None:
    """`__version__` of the module, else of its top-level package (a HEAR module is often `package.hear`)."""
    version = getattr(module, "__version__", None)
    if version is None and "." in module.__name__:
        version = getattr(importlib.import_module(module.__name__.split(".")[0]), "__version__", None)
    return None if version is None else str(version)


def load_hear_module(spec: EncoderSpec) -> HearModule:
    """Import `spec.module` and call its `load_model(spec.path, **spec.options)` (`load_model(**spec.options)` when
    the spec has no model file), as heareval's runner does; the model comes back in eval mode. A module that cannot
    be imported, lacks the HEAR functions, or whose model lacks `sample_rate` / `scene_embedding_size` raises
    AsitError naming it."""
    if not spec.module:
        raise ValueError(f"encoder {spec.name} is not a HEAR module")
    identity = hear_module_identity(spec)          # also checks that the model file exists
    where = f"encoder {spec.name}: HEAR module {spec.module}"
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise AsitError(f"{where} cannot be imported ({exc}); install it in this environment") from None
    missing = [name for name in ("load_model", "get_scene_embeddings") if not callable(getattr(module, name, None))]
    if missing:
        raise AsitError(f"{where} has no {' or '.join(missing)}: not a HEAR 2021 module")
    args = [spec.path] if spec.path else []
    model = module.load_model(*args, **dict(spec.options))
    if not isinstance(model, nn.Module):
        raise AsitError(f"{where}: load_model returned a {type(model).__name__}, not a torch.nn.Module (only torch "
                        "HEAR modules are supported)")
    absent = [name for name in ("sample_rate", "scene_embedding_size") if not hasattr(model, name)]
    if absent:
        raise AsitError(f"{where}: its model has no {' or '.join(absent)} (the HEAR API requires both)")
    return HearModule(spec.module, module, model.eval(), int(model.sample_rate), int(model.scene_embedding_size),
                      module_version(module), identity)
