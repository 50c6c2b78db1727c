"""Per-step schedules that are pure functions of the step, so a resumed run recomputes exactly the same values.
(The learning rate uses timm's CosineLRScheduler; these cover weight decay, EMA momentum and temperatures.)"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingProgress:
    step: int            # optimizer steps done so far
    total_steps: int     # the schedules' length: max_epochs × steps_per_epoch, or fewer under trainer.max_steps or
                         # the time budget's estimate (docs/pretraining.md, "Budgets")
    epoch: int
    steps_per_epoch: int


def cosine(start: float, end: float, step: int, total: int) -> float:
    """Half-cosine from `start` (step 0) to `end` (step total - 1); held at `end` afterwards."""
    if total <= 1:
        return end
    t = min(max(step, 0), total - 1) / (total - 1)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


def linear_warmup(start: float, end: float, step: int, warmup_steps: int) -> float:
    """Linear from `start` to `end` over `warmup_steps`, then `end`."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps
