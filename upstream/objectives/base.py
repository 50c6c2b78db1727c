"""The seam between the generic pretraining loop and a self-supervised method."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..encoders import AudioEncoder
from ..schedules import TrainingProgress

ViewTransform = Callable[[torch.Tensor, np.random.Generator], dict[str, torch.Tensor]]


class PretrainObjective(nn.Module):
    """A method = its networks + losses. The Lightning module owns optimisation, schedules, logging, checkpoints.

    Batches are dicts with `views` [B, V, 1, T, F] (normalised fbank crops of the same clip) plus whatever the
    objective's `view_transform` added per sample in the data workers.
    """

    name: str = ""

    @classmethod
    def from_config(cls, params: Mapping[str, Any], encoder: Any) -> "PretrainObjective":
        raise NotImplementedError

    def view_transform(self) -> ViewTransform | None:
        """Picklable per-sample transform run in data workers (e.g. mask generation); None for none."""
        return None

    def training_losses(self, batch: dict[str, torch.Tensor], progress: TrainingProgress) -> dict[str, torch.Tensor]:
        """Loss terms for logging; must contain `loss`, the total to back-propagate."""
        raise NotImplementedError

    def after_backward(self, progress: TrainingProgress) -> None:
        """Hook between backward and the optimizer step (e.g. freezing a layer's gradients)."""

    def after_optimizer_step(self, progress: TrainingProgress) -> None:
        """Hook after each optimizer step (e.g. the EMA teacher update)."""

    def export_encoder(self, which: str = "teacher") -> AudioEncoder:
        """The encoder whose weights are exported for evaluation (`which` matters to student/teacher methods;
        single-network methods return their one encoder for both)."""
        raise NotImplementedError

    def metrics(self, progress: TrainingProgress) -> dict[str, float]:
        """Scheduled scalars worth logging (momentum, temperature, …)."""
        return {}
