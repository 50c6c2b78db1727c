"""Pretraining objectives over the registered encoders. Each is a `PretrainObjective`: ASiT, ACM-SSKD and the SupMAM
family (ViT), the conformer wav2vec 2.0 (conformer). A new method plugs in by adding an entry to `OBJECTIVES`."""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..errors import AsitError
from ..frontend import FrontendConfig
from .base import DataNeeds, PretrainObjective

OBJECTIVES: dict[str, str] = {
    "asit": "upstream.objectives.asit:ASiTObjective",
    "wav2vec2_conformer": "upstream.objectives.wav2vec2_conformer:Wav2Vec2ConformerObjective",
    "acm_sskd": "upstream.objectives.acm_sskd:ACMSSKDObjective",
    "supmam": "upstream.objectives.supmam:SupMAMObjective",
}


def objective_class(name: Any) -> type[PretrainObjective]:
    if name not in OBJECTIVES:
        raise AsitError(f"objective.name {name!r} unknown; available: {', '.join(OBJECTIVES)}")
    module_name, class_name = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_objective(spec: Mapping[str, Any], encoder: Any, frontend: FrontendConfig | None = None
                    ) -> PretrainObjective:
    """`spec` is the config's `objective` mapping: `name` plus that objective's own parameters."""
    params = dict(spec)
    return objective_class(params.pop("name", None)).from_config(params, encoder, frontend)


__all__ = ["OBJECTIVES", "build_objective", "objective_class", "DataNeeds", "PretrainObjective"]
