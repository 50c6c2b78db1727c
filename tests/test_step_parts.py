"""benchmarks/step_parts.py (where a pretraining step's time goes) and the regional torch.compile switch the
benchmark and `trainer.compile` share: the clock's bookkeeping, not its seconds (no timed assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import TINY_PRETRAIN_OVERRIDES

from benchmarks.step_parts import StepClock, network_children, step_breakdown, time_forwards
from upstream.encoders import EncoderConfig
from upstream.objectives.asit import ASiTConfig, ASiTObjective
from upstream.pretrain import PretrainModule, load_pretrain_config


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.calls = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x) * 2      # nested: one part, not two


class _Objective(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _Net()
        self.stateless = nn.Identity()           # no parameters: not a part


def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """perf_counter advancing 1 s per call: every start/stop pair of an unnested part adds exactly 1 s."""
    ticks = [0.0]

    def tick() -> float:
        ticks[0] += 1.0
        return ticks[0]
    monkeypatch.setattr("benchmarks.step_parts.time.perf_counter", tick)
    return ticks


def test_nested_forward_calls_count_once_and_shadows_are_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    objective = _Objective()
    assert list(network_children(objective)) == ["net"]
    _fake_clock(monkeypatch)
    clock = StepClock(torch.device("cpu"))
    remove = time_forwards(objective, clock)
    objective.net(torch.ones(1, 3))               # forward -> forward_features: one open/close of the part
    objective.net.forward_features(torch.ones(1, 3))
    assert clock.seconds == {"forward:net": 2.0}
    remove()
    assert "forward" not in vars(objective.net) and "forward_features" not in vars(objective.net)
    assert objective.net.calls == 2


def test_breakdown_overhead_is_the_timed_step_minus_its_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    objective = _Objective()
    seen: list[bool] = []

    def step(clock: StepClock | None) -> None:
        seen.append(clock is not None)
        objective.net(torch.ones(1, 3))
        if clock is not None:
            with clock.part("backward"):
                pass
    _fake_clock(monkeypatch)
    result = step_breakdown(step, objective, torch.device("cpu"), repeats=3)
    assert seen == [False] + [False, True] * 3    # warm-up, then free and timed steps interleaved
    assert result["parts_s"] == {"backward": 1.0, "forward:net": 1.0}
    # a timed step reads the clock at its start and end, and each part twice: 6 ticks -> 5 s, of which 2 s parts
    assert result["timed_step_s"] == 5.0 and result["overhead_s"] == 3.0
    assert result["overhead_fraction"] == pytest.approx(1.5)
    assert "forward" not in vars(objective.net)   # the free steps ran unshadowed


def test_compile_layers_compiles_every_encoder_block_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    enc = EncoderConfig(size="tiny", embed_dim=32, depth=3, num_heads=2, trained_frames=32)
    objective = ASiTObjective(ASiTConfig(out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8), enc)
    keys = list(objective.state_dict())
    assert objective.compile_layers() == 6        # student and teacher, three blocks each
    assert compiled == [*objective.student.blocks, *objective.teacher.blocks]
    assert list(objective.state_dict()) == keys   # checkpoints keep their names


def test_trainer_compile_compiles_the_objectives_encoders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    compiled: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    base = TINY_PRETRAIN_OVERRIDES + [f"data.source={tmp_path}"]
    PretrainModule(load_pretrain_config("demo_tiny", base))
    assert compiled == []                          # off by default: measured no faster on the CPU
    module = PretrainModule(load_pretrain_config("demo_tiny", base + ["trainer.compile=true"]))
    assert compiled == [*module.objective.student.blocks, *module.objective.teacher.blocks]
