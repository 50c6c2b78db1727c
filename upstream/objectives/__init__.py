"""Pretraining objectives over the registered encoders. Each is a `PretrainObjective`: ASiT (ViT) and the conformer
wav2vec 2.0 (conformer) so far; the other seed peers (ACM-SSKD, SupMAM) plug in beside them by adding an entry to
`OBJECTIVES`."""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..errors import AsitError
from .base import PretrainObjective

OBJECTIVES: dict[str, str] = {
    "asit": "upstream.objectives.asit:ASiTObjective",
    "wav2vec2_conformer": "upstream.objectives.wav2vec2_conformer:Wav2Vec2ConformerObjective",
}


def build_objective(spec: Mapping[str, Any], encoder: Any) -> PretrainObjective:
    """`spec` is the config's `objective` mapping: `name` plus that objective's own parameters."""
    params = dict(spec)
    name = params.pop("name", None)
    if name not in OBJECTIVES:
        raise AsitError(f"objective.name {name!r} unknown; available: {', '.join(OBJECTIVES)}")
    module_name, class_name = OBJECTIVES[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_config(params, encoder)


__all__ = ["OBJECTIVES", "build_objective", "PretrainObjective"]
