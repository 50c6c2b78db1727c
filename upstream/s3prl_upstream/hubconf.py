"""s3prl hub entries for ASiT (s3prl's `upstream/<name>/hubconf.py` convention).

s3prl's runner resolves `-u NAME` with `getattr(s3prl.hub, NAME)` and calls it as
`NAME(ckpt=<-k>, model_config=<-g>, refresh=<-r>)`. `register()` adds these entries to `s3prl.hub` at run time
(the `asit s3prl` launcher does it), so nothing in site-packages is edited.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Callable

from .expert import UpstreamExpert


def asit_local(ckpt: str | Path | None = None, model_config: str | Path | None = None, refresh: bool = False,
               **kwargs: Any) -> UpstreamExpert:
    """An asit-hear encoder: an exported encoder (`asit export`) or a Lightning pretraining checkpoint (-k)."""
    return UpstreamExpert(ckpt, model_config, sources=("export", "lightning"), entry="asit_local")


def asit_official(ckpt: str | Path | None = None, model_config: str | Path | None = None, refresh: bool = False,
                  **kwargs: Any) -> UpstreamExpert:
    """An official ASiT checkpoint (Sara-Ahmed/ASiT `main_ASiT.py`: teacher backbone, 32 kHz fbank by default;
    `-g` with `sample_rate: 16000` follows the paper's rate instead) or a bare backbone state dict (-k)."""
    return UpstreamExpert(ckpt, model_config, sources=("official", "state_dict"), entry="asit_official")


ENTRIES: dict[str, Callable[..., UpstreamExpert]] = {"asit_local": asit_local, "asit_official": asit_official}


def register(hub: types.ModuleType | None = None) -> list[str]:
    """Add the entries to s3prl's hub module (default: `s3prl.hub`, whose import needs `compat.install()` first).
    Idempotent; returns the registered names."""
    if hub is None:
        import s3prl.hub as hub
    for name, entry in ENTRIES.items():
        setattr(hub, name, entry)
    return list(ENTRIES)
