"""The seam between the generic pretraining loop and a self-supervised method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from ..encoders import AudioEncoder
from ..frontend import FrontendConfig
from ..schedules import TrainingProgress

# (sample, rng) -> extra per-sample entries. `sample` holds `views` [V, 1, T, F] (normalised fbank crops of one
# clip), and, when the objective's `data_needs` asks for them, `labels` [C] (multi-hot float32) and `waves` [V, S]
# (the mono waveform of exactly each view's span, at the frontend's sample rate).
ViewTransform = Callable[[dict[str, torch.Tensor], np.random.Generator], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class DataNeeds:
    """What an objective needs from the pretraining data; checked against the data config before any work."""

    num_views: int | None = None     # crops per clip the objective is written for (None: any)
    labels: bool = False             # multi-hot clip labels from a labelled manifest
    num_classes: int | None = None   # the label count the objective's classifier was built for
    waves: bool = False              # the waveform of each crop (for teachers computing their own features)


class PretrainObjective(nn.Module):
    """A method = its networks + losses. The Lightning module owns optimisation, schedules, logging, checkpoints.

    Batches are dicts with `views` [B, V, 1, T, F], `labels` [B, C] and `waves` [B, V, S] when asked for, plus
    whatever the objective's `view_transform` added per sample in the data workers.
    """

    name: str = ""
    # where the exported encoder's weights live in the objective's state dict, per `which`: a Lightning checkpoint
    # is read by building only that encoder and loading these keys (no objective, no teacher file, no Lightning)
    encoder_prefixes: ClassVar[dict[str, str]] = {"teacher": "encoder.", "student": "encoder."}

    def __init__(self) -> None:
        super().__init__()
        self._health: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, params: Mapping[str, Any], encoder: Any,
                    frontend: FrontendConfig | None = None) -> "PretrainObjective":
        raise NotImplementedError

    def data_needs(self) -> DataNeeds:
        return DataNeeds()

    def compile_layers(self) -> int:
        """Regional torch.compile of every encoder the objective holds (student, teacher, ...: each
        AudioEncoder.compile_layers); `trainer.compile` and `asit perf --compile`. Returns the blocks compiled."""
        return sum(module.compile_layers() for module in self.modules() if isinstance(module, AudioEncoder))

    def view_transform(self) -> ViewTransform | None:
        """Picklable per-sample transform run in data workers (e.g. mask generation); None for none."""
        return None

    def training_losses(self, batch: dict[str, torch.Tensor], progress: TrainingProgress) -> dict[str, torch.Tensor]:
        """Loss terms for logging; must contain `loss`, the total to back-propagate. May call `record_health`."""
        raise NotImplementedError

    def record_health(self, **signals: torch.Tensor) -> None:
        """Keep health signals of this step (`upstream.health`: collapse, reconstruction vs a mean predictor), computed
        under no_grad from tensors the step already has; the Lightning module logs them as `health/<name>`."""
        self._health.update({name: value.detach() for name, value in signals.items()})

    def pop_health(self) -> dict[str, torch.Tensor]:
        """The health signals recorded since the last call (and forget them)."""
        health, self._health = self._health, {}
        return health

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
