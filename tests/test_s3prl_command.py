"""`asit s3prl` argument checks (before s3prl is imported), expdir resolution, reading s3prl's log, configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

from upstream.cli import main as cli
from upstream.errors import AsitError
from upstream.s3prl_upstream import CONFIG_DIR, PROFILES, TASKS, config_path
from upstream.s3prl_upstream.command import expdir_of, prepare_argv
from upstream.s3prl_upstream.results import last_value, read_log


@pytest.mark.parametrize("argv, message", [
    ([], "give s3prl's run_downstream arguments after --"),
    (["--"], "give s3prl's run_downstream arguments after --"),
    (["--", "-m", "train", "-u", "asit_local", "-d", "speech_commands"], "pass -c CONFIG: s3prl 0.4.18 ships no"),
    (["--", "-m", "train", "-c", "nope.yaml"], "config -c nope.yaml does not exist"),
    (["--", "-m", "evaluate", "-e", "nope/dev-best.ckpt"], "checkpoint -e nope/dev-best.ckpt does not exist"),
    (["--", "-m", "train", "--hub", "huggingface", "-u", "x/y"], "--hub huggingface and --push_to_hf_hub are not"),
])
def test_launcher_refuses_what_s3prl_would_fail_on(argv: list[str], message: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert cli(["s3prl", *argv]) == 2
    assert f"asit s3prl: error: {message}" in capsys.readouterr().err


def test_prepare_argv_adds_cpu_only_without_cuda(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("runner: {}\n")
    argv = prepare_argv(["--", "-m", "train", "-c", str(config), "-d", "speech_commands"])
    assert argv[:6] == ["-m", "train", "-c", str(config), "-d", "speech_commands"]
    assert (argv[6:] == ["--device", "cpu"]) == (not torch.cuda.is_available())
    assert prepare_argv(["-m", "train", "-c", str(config), "--device", "cuda:1"])[-2:] == ["--device", "cuda:1"]
    with pytest.raises(AsitError, match="pass -c CONFIG"):                # -a with nothing to resume
        prepare_argv(["-m", "train", "-a", "-p", str(tmp_path)])
    (tmp_path / "states-4.ckpt").write_bytes(b"")
    assert prepare_argv(["-m", "train", "-a", "-p", str(tmp_path)])[:4] == ["-m", "train", "-a", "-p"]


def test_expdir_follows_s3prl_rules(tmp_path: Path) -> None:
    ckpt = tmp_path / "exp" / "dev-best.ckpt"
    assert expdir_of(["-m", "train", "-p", "out/ks"]) == Path("out/ks")
    assert expdir_of(["-m", "train", "-n", "ks"]) == Path("result/downstream/ks")
    assert expdir_of(["-m", "evaluate", "-e", str(ckpt)]) == tmp_path / "exp"
    ckpt.parent.mkdir()
    assert expdir_of(["-m", "evaluate", "-e", str(ckpt.parent)]) == tmp_path / "exp"


def test_read_log(tmp_path: Path) -> None:
    (tmp_path / "log.log").write_text(
        "train at step 2: 0.125\ndev at step 4: 0.5\nNew best on dev at step 4: 0.5\ntest at step 4: 0.25\n"
        "test at step 0: 0.25\n")
    records = read_log(tmp_path)
    assert [(r.split, r.step, r.value) for r in records] == [
        ("train", 2, 0.125), ("dev", 4, 0.5), ("test", 4, 0.25), ("test", 0, 0.25)]
    assert last_value(tmp_path, "dev") == 0.5 and last_value(tmp_path, "test", step=4) == 0.25
    with pytest.raises(AsitError, match="has no 'test' result at step 8"):
        last_value(tmp_path, "test", step=8)
    with pytest.raises(AsitError, match="no s3prl log at .*missing/log.log"):
        read_log(tmp_path / "missing")


def test_shipped_configs_keep_superb_defaults_and_smoke_profiles_are_small() -> None:
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(f"{t}_{p}.yaml" for t in TASKS
                                                                       for p in PROFILES)
    ks, sid = (yaml.safe_load(config_path(t, "superb").read_text()) for t in TASKS)
    assert ks["runner"]["total_steps"] == sid["runner"]["total_steps"] == 200000
    assert ks["optimizer"]["lr"] == sid["optimizer"]["lr"] == 1.0e-4
    assert ks["downstream_expert"]["datarc"]["batch_size"] == 32
    assert sid["downstream_expert"]["datarc"]["train_batch_size"] == 8
    assert sid["runner"]["gradient_accumulate_steps"] == 4 and sid["downstream_expert"]["datarc"]["max_timestep"] == 128000
    for task in TASKS:
        superb, smoke = (yaml.safe_load(config_path(task, p).read_text()) for p in PROFILES)
        assert smoke["downstream_expert"]["modelrc"] == superb["downstream_expert"]["modelrc"]
        assert smoke["runner"]["total_steps"] <= 10 and smoke["downstream_expert"]["datarc"]["num_workers"] == 0
        assert set(smoke["downstream_expert"]["datarc"]) == set(superb["downstream_expert"]["datarc"])
    with pytest.raises(AsitError, match="no s3prl config for task 'asr'"):
        config_path("asr", "superb")


def stand_in_s3prl(monkeypatch: pytest.MonkeyPatch, main: Callable[[], None]) -> tuple[Any, Any, Any]:
    """Stand-in s3prl modules whose run_downstream.main is `main`; returns (hub, voxceleb1 dataset, expert)."""
    import sys
    import types

    from upstream.s3prl_upstream import compat

    modules = {name: types.ModuleType(name) for name in (
        "s3prl", "s3prl.hub", "s3prl.run_downstream", "s3prl.downstream", "s3prl.downstream.voxceleb1",
        "s3prl.downstream.voxceleb1.dataset", "s3prl.downstream.voxceleb1.expert")}
    hub, runner = modules["s3prl.hub"], modules["s3prl.run_downstream"]
    vox_dataset = modules["s3prl.downstream.voxceleb1.dataset"]
    vox_expert = modules["s3prl.downstream.voxceleb1.expert"]
    runner.main, vox_dataset.CACHE_PATH = main, "site-packages/.cache/"
    vox_expert.SpeakerClassifiDataset = object
    modules["s3prl"].hub, modules["s3prl"].run_downstream = hub, runner
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(compat, "install", lambda: [])
    return hub, vox_dataset, vox_expert


def test_run_downstream_registers_then_calls_s3prl_main_and_restores_the_process(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The launcher's orchestration, against stand-in s3prl modules (the real one is exercised in the e2e tests)."""
    import builtins
    import sys

    from upstream.s3prl_upstream import command, compat

    seen: dict = {}

    class SpeakerClassifiDataset:                                    # s3prl's reader: reads the module's CACHE_PATH
        def __init__(self, mode, file_path, meta_data, max_timestep=None):  # type: ignore[no-untyped-def]
            seen["cache"] = vox_dataset.CACHE_PATH

    def main() -> None:                                              # s3prl's run_downstream.main
        seen["argv"] = list(sys.argv)
        seen["entries"] = (hub.asit_local, hub.asit_official)
        seen["reader"] = vox_expert.SpeakerClassifiDataset
        builtins.isinstance = lambda obj, cls, _real=builtins.isinstance: _real(obj, cls)  # its hack_isinstance

    hub, vox_dataset, vox_expert = stand_in_s3prl(monkeypatch, main)
    vox_expert.SpeakerClassifiDataset = SpeakerClassifiDataset
    real_isinstance, real_argv = builtins.isinstance, list(sys.argv)

    command.run_downstream(["-m", "train", "-d", "voxceleb1"], tmp_path)
    assert seen["argv"] == ["run_downstream.py", "-m", "train", "-d", "voxceleb1"]
    assert [entry.__name__ for entry in seen["entries"]] == ["asit_local", "asit_official"]
    assert builtins.isinstance is real_isinstance and sys.argv == real_argv
    split = tmp_path / "iden_split.txt"
    split.write_text("1 id10001/v/00001.wav\n")
    reader = seen["reader"]("train", tmp_path / "audio", split)
    assert isinstance(reader, SpeakerClassifiDataset)
    assert seen["cache"] == f"{tmp_path / 'voxceleb1' / compat.voxceleb1_cache_key(tmp_path / 'audio', split)}/"


def test_two_runs_in_one_process_get_different_s3prl_time_tags(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """s3prl writes `args_<time tag>.yaml` per run, to the second: an evaluate started in the second its training
    started in overwrote the training's record (the sweep's train-then-evaluate of a short run)."""
    from s3prl.utility.helper import get_time_tag

    from upstream.s3prl_upstream import command

    tags: list[str] = []
    stand_in_s3prl(monkeypatch, lambda: tags.append(get_time_tag()))
    for mode in ("train", "evaluate", "evaluate"):
        command.run_downstream(["-m", mode], tmp_path)
    assert len(set(tags)) == 3, tags
