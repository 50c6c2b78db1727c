"""Before a Lightning run resumes from a checkpoint: does the checkpoint fit the module that will load it?

Lightning finds out inside `trainer.fit`, after the data loaders and processes have started, and reports a
mismatch as load_state_dict's multi-line RuntimeError. `check_checkpoint_fits` reads the file first (weights only)
and names the file and the first mismatching keys with both shapes, in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from .checkpoint import EXPORT_FORMAT, read_checkpoint
from .errors import AsitError

SHOWN = 3   # mismatching keys named in the message


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return "x".join(str(d) for d in shape) if shape is not None and len(shape) else "scalar"


def state_dict_mismatch(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """What keeps `saved` from loading strictly into a module whose state dict is `expected`, in words (None: it
    fits): keys whose shapes differ (checkpoint vs model), then keys only one side has."""
    wrong = [f"{key} {_shape(saved[key])} in the checkpoint vs {_shape(value)} in the model"
             for key, value in expected.items() if key in saved and tuple(getattr(saved[key], "shape", ())) !=
             tuple(getattr(value, "shape", ()))]
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} tensor(s) differ in shape: {'; '.join(wrong[:SHOWN])}"
                     + ("; …" if len(wrong) > SHOWN else ""))
    if missing:
        parts.append(f"it lacks {len(missing)} key(s) of the model, e.g. {', '.join(missing[:SHOWN])}")
    if unexpected:
        parts.append(f"it holds {len(unexpected)} key(s) the model does not have, e.g. "
                     f"{', '.join(unexpected[:SHOWN])}")
    return "; ".join(parts) or None


def check_checkpoint_fits(path: str | Path, module: nn.Module, what: str = "checkpoint") -> None:
    """Refuse (one AsitError naming `path`) a Lightning checkpoint whose `state_dict` does not load strictly into
    `module`; `what` names the file's role in the message (e.g. '--resume checkpoint')."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise AsitError(f"{what} {path} is not a Lightning training checkpoint (it has no state_dict)")
    if checkpoint.get("format") == EXPORT_FORMAT:
        raise AsitError(f"{what} {path} is an exported encoder, not a Lightning training checkpoint "
                        "(resume from a run's checkpoints/last.ckpt)")
    problem = state_dict_mismatch(checkpoint["state_dict"], module.state_dict())
    if problem:
        raise AsitError(f"{what} {path} does not fit the model being trained: {problem}")


__all__ = ["check_checkpoint_fits", "state_dict_mismatch"]
