"""Where a pretraining step's time goes: the forward of each of the objective's networks (its direct children that
hold parameters: ASiT's student, teacher and three heads; the conformer's encoder, quantiser, …), backward, the
optimizer and the objective's after-step work (ASiT's EMA), timed inside real steps; whatever the step spends outside
these parts (masking, losses, health statistics, centring, autocast, zero_grad) is its overhead.

Timing boundaries synchronise the device, so the timed step is slightly slower than a free-running one; the report
carries both, and the overhead is computed within the timed steps, where the parts and the total are measured on
the same clock.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a clock read after it times that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Accumulates seconds per part name over one step, synchronising `device` at every boundary."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)
        self._since: dict[str, float] = {}

    def sync(self) -> None:
        sync(self.device)

    def start(self, name: str) -> None:
        """Opens `name`; a call nested in an open part of the same name (forward calling forward_features) is
        part of the outer one, not counted twice."""
        self._depth[name] += 1
        if self._depth[name] == 1:
            self.sync()
            self._since[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        self._depth[name] -= 1
        if self._depth[name] == 0:
            self.sync()
            self.seconds[name] += time.perf_counter() - self._since[name]

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def reset(self) -> None:
        self.seconds = defaultdict(float)


def network_children(objective: nn.Module) -> dict[str, nn.Module]:
    """The objective's direct children that hold parameters: the networks whose forwards are parts of the step."""
    return {name: child for name, child in objective.named_children()
            if any(True for _ in child.parameters())}


TIMED_METHODS = ("forward", "forward_features")   # how objectives call their networks (ASiT: forward_features)


def time_forwards(objective: nn.Module, clock: StepClock) -> Callable[[], None]:
    """Times every call of each network child's forward (and forward_features, which objectives call directly) as
    `forward:<name>`, by shadowing those methods on the instance; returns the function that removes the shadows."""
    shadowed: list[tuple[nn.Module, str]] = []
    for name, child in network_children(objective).items():
        for method in TIMED_METHODS:
            if hasattr(child, method) and method not in vars(child):
                setattr(child, method, _timed_call(getattr(child, method), clock, f"forward:{name}"))
                shadowed.append((child, method))

    def remove() -> None:
        for child, method in shadowed:
            delattr(child, method)
    return remove


def _timed_call(call: Callable[..., Any], clock: StepClock, part: str) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        clock.start(part)
        try:
            return call(*args, **kwargs)
        finally:
            clock.stop(part)
    return timed


def step_breakdown(step: Callable[[StepClock | None], None], objective: nn.Module, device: torch.device,
                   repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Runs `step(clock)` — which must time its backward, optimizer and after-step work through `clock.part` and
    skip the clock when given None — `repeats` times free-running and `repeats` times with every part timed,
    interleaved. Returns the median free-running step, the median timed step, the median of each part, the parts'
    sum and the overhead (timed step − parts, as a share of the parts), all from the timed steps."""
    clock = StepClock(device)
    for _ in range(warmup):
        step(None)
    free: list[float] = []
    timed: list[float] = []
    parts: dict[str, list[float]] = defaultdict(list)
    overheads: list[float] = []
    for _ in range(repeats):
        clock.sync()
        start = time.perf_counter()
        step(None)
        clock.sync()
        free.append(time.perf_counter() - start)

        remove = time_forwards(objective, clock)
        clock.reset()
        try:
            start = time.perf_counter()
            step(clock)
            clock.sync()
            total = time.perf_counter() - start
        finally:
            remove()
        timed.append(total)
        for name, seconds in clock.seconds.items():
            parts[name].append(seconds)
        overheads.append(total - sum(clock.seconds.values()))
    part_medians = {name: statistics.median(values) for name, values in sorted(parts.items())}
    parts_sum = sum(part_medians.values())
    timed_median = statistics.median(timed)
    return {"free_step_s": statistics.median(free), "timed_step_s": timed_median, "parts_s": part_medians,
            "parts_sum_s": parts_sum, "overhead_s": statistics.median(overheads),
            "overhead_fraction": statistics.median(overheads) / parts_sum if parts_sum > 0 else float("nan"),
            "free_times_s": free, "timed_times_s": timed}


__all__ = ["StepClock", "network_children", "step_breakdown", "sync", "time_forwards"]
