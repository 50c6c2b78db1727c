"""The `parallel:` section of a suite: how its cells are spread over processes (benchmarks/parallel.py runs them).
Its own module so that parsing a suite does not import the process machinery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from upstream.errors import AsitError

BACKENDS = ("serial", "local", "slurm", "debug")


@dataclass(frozen=True)
class ParallelConfig:
    """How a suite's cells are spread. `serial`: one after the other in the coordinator (the default). `local`:
    `workers` processes on this machine, each with `threads` torch threads (default: the cores shared evenly), or one
    per entry of `devices` (CUDA_VISIBLE_DEVICES set to it). `slurm`: a submitit job array (`slurm` holds submitit's
    parameters: partition, timeout_min, gpus_per_node, cpus_per_task, mem_gb, ...; `workers` caps how many run at
    once). `debug`: submitit's in-process debug executor (for tests and for stepping through a cell)."""

    backend: str = "serial"
    workers: int = 1
    devices: tuple[str, ...] = ()
    threads: int = 0
    slurm: dict[str, Any] = field(default_factory=dict)

    def check(self, source: str = "suite") -> None:
        if self.backend not in BACKENDS:
            raise AsitError(f"{source}: parallel.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.workers < 1:
            raise AsitError(f"{source}: parallel.workers must be positive, got {self.workers}")
        if self.threads < 0:
            raise AsitError(f"{source}: parallel.threads must be >= 0 (0: the cores shared evenly), got "
                            f"{self.threads}")

    @property
    def slots(self) -> int:
        return len(self.devices) if self.devices else self.workers


def parse_parallel(raw: Any, source: str = "suite") -> ParallelConfig:
    """The suite's `parallel:` mapping (absent: serial); `workers > 1` without a backend means `local`."""
    if raw is None:
        return ParallelConfig()
    if not isinstance(raw, dict):
        raise AsitError(f"{source}: parallel must be a mapping (backend, workers, devices, threads, slurm), got "
                        f"{type(raw).__name__}")
    unknown = set(raw) - {"backend", "workers", "devices", "threads", "slurm"}
    if unknown:
        raise AsitError(f"{source}: parallel has unknown key(s) {sorted(unknown)}")
    devices = raw.get("devices") or ()
    if isinstance(devices, (str, int)):
        devices = [part for part in str(devices).split(",") if part.strip()]
    workers = int(raw.get("workers", 1))
    backend = str(raw.get("backend") or ("local" if workers > 1 or devices else "serial"))
    slurm = raw.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise AsitError(f"{source}: parallel.slurm must be a mapping of submitit parameters")
    config = ParallelConfig(backend, workers, tuple(str(d).strip() for d in devices), int(raw.get("threads", 0)),
                            dict(slurm))
    config.check(source)
    return config


__all__ = ["BACKENDS", "ParallelConfig", "parse_parallel"]
