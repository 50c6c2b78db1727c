"""Pretraining objectives over the shared encoder. Each is a `PretrainObjective`; ASiT is the first, the seed peers
(ACM-SSKD, SupMAM, conformer wav2vec 2.0) plug in beside it by adding an entry to `OBJECTIVES`."""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..encoder import EncoderConfig
from ..errors import AsitError
from .base import PretrainObjective

OBJECTIVES: dict[str, str] = {
    "asit": "upstream.objectives.asit:ASiTObjective",
}


def build_objective(spec: Mapping[str, Any], encoder: EncoderConfig) -> PretrainObjective:
    """`spec` is the config's `objective` mapping: `name` plus that objective's own parameters."""
    params = dict(spec)
    name = params.pop("name", None)
    if name not in OBJECTIVES:
        raise AsitError(f"objective.name {name!r} unknown; available: {', '.join(OBJECTIVES)}")
    module_name, class_name = OBJECTIVES[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_config(params, encoder)


__all__ = ["OBJECTIVES", "build_objective", "PretrainObjective"]
