"""Before a Lightning run resumes from a checkpoint: does the checkpoint fit the module that will load it?

Lightning finds out inside `trainer.fit`, after the data loaders and processes have started, and reports a
mismatch as load_state_dict's multi-line RuntimeError. `check_checkpoint_fits` reads the file first (weights only)
and names the file and the first mismatching keys with both shapes, in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from torch import nn

from .checkpoint import EXPORT_FORMAT, read_checkpoint, state_dict_mismatch
from .errors import AsitError

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
