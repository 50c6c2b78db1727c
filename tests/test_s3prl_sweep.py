"""`asit s3prl --lr-sweep`: the grid, argument refusals, selection on dev, the lr_sweep.json record, resuming, the one
row `asit bench --s3prl-runs` makes of a sweep, and the data fingerprint of s3prl rows.

The selection and resume logic runs against a stand-in for s3prl's run_downstream that writes what s3prl writes
(args/config yaml, log.log lines, dev-best/states checkpoints); one real 2-point sweep goes through s3prl itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.results import ResultsStore
from benchmarks.s3prl_results import ingest_s3prl_runs, ks_hash_role, run_folder, s3prl_cell, s3prl_data_fingerprint
from tasks.api import EncoderSpec
from upstream.cli import main as cli
from upstream.errors import AsitError
from upstream.s3prl_upstream.results import last_value, read_log
from upstream.s3prl_upstream.sweep import (LR_KEY, SWEEP_FILE, SweepPoint, choose, lr_grid, lr_label,
                                           parse_sweep_args, run_sweep)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ the grid


def test_grid_is_log_spaced_rounded_and_includes_both_ends() -> None:
    assert lr_grid(1e-5, 1e-1) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]          # default: one point per decade
    assert lr_grid(1e-4, 3e-4) == [1e-4, 3e-4]                              # at least 2
    assert lr_grid(1e-4, 1e-3, 4) == [1e-4, 2.15e-4, 4.64e-4, 1e-3]         # 10^(1/3) steps, 3 significant digits
    assert [lr_label(x) for x in lr_grid(1e-4, 1e-3, 4)] == ["1e-04", "2.15e-04", "4.64e-04", "1e-03"]
    assert lr_grid(3.14159e-4, 1.0, 2) == [3.14e-4, 1.0]
    assert float(lr_label(2.15e-4)) == 2.15e-4 and lr_label(1.0) == "1e+00"
    with pytest.raises(AsitError, match="--lr-points 3: the grid from 1e-04 to 1.01e-04 repeats rates"):
        lr_grid(1e-4, 1.01e-4, 3)
    with pytest.raises(AsitError, match="the same rate at 3 significant digits"):
        lr_grid(1e-4, 1.0001e-4)
    with pytest.raises(AsitError, match="HIGH .* must be greater than LOW"):
        lr_grid(1e-2, 1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--lr-sweep", "1e-2", "1e-4"], "argument --lr-sweep: HIGH (0.0001) must be greater than LOW (0.01)"),
    (["--lr-sweep", "0", "1e-4"], "argument --lr-sweep: must be a positive learning rate, got '0'"),
    (["--lr-sweep", "1e-4", "inf"], "argument --lr-sweep: must be a positive learning rate, got 'inf'"),
    (["--lr-sweep", "x", "1e-4"], "argument --lr-sweep: must be a positive learning rate, got 'x'"),
    (["--lr-sweep", "1e-4", "1e-2", "--lr-points", "1"], "argument --lr-points: must be an integer of at least 2"),
])
def test_grid_options_are_refused_at_parsing(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(["s3prl", *argv, "--", "-m", "train", "-p", "x"])
    assert exit_.value.code == 2 and f"asit s3prl: error: {message}" in capsys.readouterr().err


TRAIN = ["-m", "train", "-u", "asit_local", "-k", "enc.pt", "-d", "voxceleb1", "-c", "c.yaml"]


@pytest.mark.parametrize("argv, message", [
    (["--lr-sweep", "1e-4", "1e-2", "--", *TRAIN], "--lr-sweep needs -p EXPDIR"),
    (["--lr-sweep", "1e-4", "1e-2", "--", "-m", "evaluate", "-e", "x/dev-best.ckpt"],
     "give the -m train arguments, not -m evaluate"),
    (["--lr-sweep", "1e-4", "1e-2", "--", *TRAIN, "-p", "out", "-e", "out/states-4.ckpt"],
     "-e (resume a checkpoint) is not supported"),
    (["--lr-sweep", "1e-4", "1e-2", "--", *TRAIN, "-p", "out", "-a"], "resumes by itself (rerun the same command)"),
    (["--lr-sweep", "1e-4", "1e-2", "--", *TRAIN[:-4], "-d", "asr", "-p", "out"], "-d asr is not one of them"),
    (["--lr-sweep", "1e-4", "1e-2", "--", *TRAIN, "-p", "out", "-o", "config.runner.total_steps=2,,"
      "config.optimizer.lr=1e-3"], f"-o sets {LR_KEY}, which --lr-sweep sets for every point"),
    (["--lr-points", "3", "--", *TRAIN, "-p", "out"], "--lr-points needs --lr-sweep LOW HIGH"),
    (["--", *TRAIN, "-p", "out", "--lr-sweep", "1e-4", "1e-2"], "are options of asit s3prl: put them before --"),
])
def test_sweep_refusals_name_the_option(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert cli(["s3prl", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asit s3prl: error: ") and message in err and err.count("\n") == 1


def test_point_arguments_merge_the_users_override_with_the_rate_last() -> None:
    args = parse_sweep_args(["--", "-u", "asit_local", "-d", "voxceleb1", "-p", "out", "--override",
                             "config.runner.total_steps=2", "--device", "cpu"])
    assert args.expdir == Path("out") and args.override == "config.runner.total_steps=2"
    assert args.train_args == ["-m", "train", "-u", "asit_local", "-d", "voxceleb1", "--device", "cpu"]
    # s3prl's -o is one string of ",,"-separated assignments applied in order: the point's rate comes last
    assert args.point_argv(Path("out/lr_2.15e-04"), 2.15e-4)[-4:] == [
        "-p", "out/lr_2.15e-04", "-o", "config.runner.total_steps=2,,config.optimizer.lr=2.15e-04"]
    assert "--device" not in args.identity()                     # a resumed sweep may run on another device
    plain = parse_sweep_args(["-m", "train", "-d", "speech_commands", "--expdir=out"])
    assert plain.expdir == Path("out") and plain.point_argv(Path("out/lr_1e-03"), 1e-3)[-2:] == [
        "-o", "config.optimizer.lr=1e-03"]


def test_choice_is_the_best_dev_and_ties_go_to_the_smaller_rate() -> None:
    points = [SweepPoint(lr=1e-3, expdir="a", evaluated=True, dev=0.5), SweepPoint(lr=1e-4, expdir="b",
                                                                                  evaluated=True, dev=0.5),
              SweepPoint(lr=1e-2, expdir="c", evaluated=True, dev=0.4, test=0.9),
              SweepPoint(lr=1e-5, expdir="d", evaluated=True, dev=None)]
    assert choose(points).lr == 1e-4                              # type: ignore[union-attr]
    assert choose([points[2], points[3]]).lr == 1e-2             # type: ignore[union-attr]
    assert choose([points[3]]) is None


# ------------------------------------------------------------------------------------------ a stand-in s3prl


DEV = {"1e-04": [0.25, 0.5], "1e-03": [0.5, 0.75], "1e-02": [0.75, 0.5], "1e-01": [0.0, 0.0]}
TEST = {"dev-best.ckpt": 0.625, "states-4.ckpt": 0.125}


class FakeS3prl:
    """Writes what s3prl's run_downstream writes in -p for `-m train` (args/config yaml, dev lines at steps 2 and 4
    from DEV, dev-best.ckpt when dev beats the best so far, states-4.ckpt) and `-m evaluate -e CKPT` (a test line at
    step 0, 0.625 for dev-best, 0.125 for states); records every call."""

    def __init__(self, tmp_path: Path) -> None:
        self.calls: list[list[str]] = []
        self.config = tmp_path / "config.yaml"
        self.config.write_text(yaml.safe_dump({"runner": {"total_steps": 4}, "optimizer": {"lr": 1e-4}}))

    def __call__(self, argv: list[str], cache_dir: Path) -> None:
        self.calls.append(argv)
        opts = dict(zip(argv[::2], argv[1::2])) if "-a" not in argv else dict(zip(argv[:-1:2], argv[1:-1:2]))
        if opts["-m"] == "evaluate":
            ckpt = Path(opts["-e"])
            with open(ckpt.parent / "log.log", "a") as log:
                log.write(f"test at step 0: {TEST[ckpt.name]}\n")
            return
        folder = Path(opts["-p"])
        folder.mkdir(parents=True, exist_ok=True)
        lr = opts["-o"].split(",,")[-1].split("=")[1]
        config = yaml.safe_load(Path(opts["-c"]).read_text())
        config["optimizer"]["lr"] = float(lr)
        tag = f"2026-01-01-10-00-0{len(list(folder.glob('args_*.yaml')))}"
        (folder / f"args_{tag}.yaml").write_text(yaml.safe_dump(
            {"mode": "train", "downstream": opts["-d"], "upstream": "asit_local", "upstream_ckpt": opts["-k"],
             "seed": 1337, "upstream_trainable": False, "upstream_feature_selection": "hidden_states"}))
        (folder / f"config_{tag}.yaml").write_text(yaml.safe_dump(config))
        best = 0.0
        with open(folder / "log.log", "a") as log:
            for step, dev in zip((2, 4), DEV[lr]):
                log.write(f"dev at step {step}: {dev}\n")
                if dev > best:
                    best = dev
                    log.write(f"New best on dev at step {step}: {dev}\n")
                    (folder / "dev-best.ckpt").write_text(str(step))
        (folder / "states-4.ckpt").write_text("4")


def fake_sweep(tmp_path: Path, low: float = 1e-4, high: float = 1e-2, points: int | None = None,
               fake: FakeS3prl | None = None, extra: tuple[str, ...] = (), runner=None  # type: ignore[no-untyped-def]
               ) -> tuple[FakeS3prl, dict]:
    fake = fake or FakeS3prl(tmp_path)
    encoder = tmp_path / "enc.pt"
    encoder.write_bytes(b"weights")
    args = parse_sweep_args(["--", "-m", "train", "-u", "asit_local", "-k", str(encoder), "-d", "voxceleb1", "-c",
                             str(fake.config), "-p", str(tmp_path / "sweep"), *extra])
    return fake, run_sweep(args, lr_grid(low, high, points), tmp_path / "cache", runner or fake, list)


def test_a_sweep_trains_and_evaluates_every_point_and_chooses_on_dev(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    fake, record = fake_sweep(tmp_path)
    sweep = tmp_path / "sweep"
    assert [c[:2] for c in fake.calls] == [["-m", "train"], ["-m", "evaluate"]] * 3
    assert fake.calls[0][-4:] == ["-p", str(sweep / "lr_1e-04"), "-o", "config.optimizer.lr=1e-04"]
    assert fake.calls[1][2:] == ["-e", str(sweep / "lr_1e-04" / "dev-best.ckpt")]
    saved = json.loads((sweep / SWEEP_FILE).read_text())
    assert saved == record and saved["complete"] and saved["metric"] == "accuracy" and saved["selected_on"] == "dev"
    assert saved["grid"] == [1e-4, 1e-3, 1e-2]
    # 1e-03 and 1e-02 both reach 0.75 on dev: the smaller rate is chosen; test values play no part
    assert saved["chosen"] == 1e-3
    assert [(p["lr"], p["expdir"], p["dev"], p["dev_step"], p["test"], p["checkpoint"]) for p in saved["points"]] == [
        (1e-4, "lr_1e-04", 0.5, 4, 0.625, "dev-best.ckpt"), (1e-3, "lr_1e-03", 0.75, 4, 0.625, "dev-best.ckpt"),
        (1e-2, "lr_1e-02", 0.75, 2, 0.625, "dev-best.ckpt")]
    table = capsys.readouterr().out
    assert "* 1e-03" in table and "  1e-02" in table and "chosen on dev" in table

    # rerun: every point holds a finished evaluation, nothing is trained or evaluated again
    fake.calls.clear()
    _, again = fake_sweep(tmp_path, fake=fake)
    assert fake.calls == [] and again == record
    assert capsys.readouterr().out.count("already evaluated") == 3

    # a wider grid adds its new points to the same record and keeps the earlier ones
    _, wider = fake_sweep(tmp_path, 1e-4, 1e-1, fake=fake)
    assert [c[:2] for c in fake.calls] == [["-m", "train"], ["-m", "evaluate"]]
    assert wider["grid"] == [1e-4, 1e-3, 1e-2, 1e-1] and wider["chosen"] == 1e-3
    # other train arguments in the same folder are refused (the points would not be comparable)
    with pytest.raises(AsitError, match="written by a sweep with other train arguments.*another -p"):
        fake_sweep(tmp_path, fake=fake, extra=("--seed", "2"))


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path: Path) -> None:
    fake = FakeS3prl(tmp_path)

    def dies_at_second_evaluation(argv: list[str], cache_dir: Path) -> None:
        if argv[:2] == ["-m", "evaluate"] and sum(c[:2] == ["-m", "evaluate"] for c in fake.calls) == 1:
            raise KeyboardInterrupt
        fake(argv, cache_dir)

    with pytest.raises(KeyboardInterrupt):
        fake_sweep(tmp_path, fake=fake, runner=dies_at_second_evaluation)
    partial = json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text())
    assert not partial["complete"] and partial["chosen"] is None
    assert [(p["trained"], p["evaluated"]) for p in partial["points"]] == [(True, True), (True, False),
                                                                           (False, False)]
    with pytest.raises(AsitError, match=r"the sweep is not finished \(not evaluated: 1e-03, 1e-02\); rerun"):
        run_folder(tmp_path / "sweep")
    # a training that stopped part-way (states written, not recorded as trained) is resumed with s3prl's -a
    (tmp_path / "sweep" / "lr_1e-02").mkdir()
    (tmp_path / "sweep" / "lr_1e-02" / "states-2.ckpt").write_text("2")
    fake.calls.clear()
    _, record = fake_sweep(tmp_path, fake=fake)
    assert [c[:2] for c in fake.calls] == [["-m", "evaluate"], ["-m", "train"], ["-m", "evaluate"]]
    assert fake.calls[0][3].endswith("lr_1e-03/dev-best.ckpt") and fake.calls[1][-1] == "-a"
    assert record["complete"] and record["chosen"] == 1e-3


def test_a_point_without_dev_best_evaluates_its_last_checkpoint_and_says_so(tmp_path: Path) -> None:
    _, record = fake_sweep(tmp_path, 1e-2, 1e-1)               # 1e-01's dev stays 0: s3prl writes no dev-best
    last = record["points"][1]
    assert (last["lr"], last["checkpoint"], last["test"], last["dev"]) == (1e-1, "states-4.ckpt", 0.125, 0.0)
    assert "no dev-best.ckpt" in last["note"] and record["chosen"] == 1e-2


# ------------------------------------------------------------------------------------------ into the store


def test_a_sweep_folder_is_one_row_with_every_point(tmp_path: Path) -> None:
    fake_sweep(tmp_path)
    sweep, encoder = tmp_path / "sweep", EncoderSpec("enc", str(tmp_path / "enc.pt"))
    cell, result, digest = s3prl_cell(sweep, encoder, cache_dir=tmp_path / "fp")
    assert result.value == last_value(sweep / "lr_1e-03", "test", step=0) == 0.625
    assert result.extra["expdir"] == str(sweep / "lr_1e-03") and result.extra["lr"] == 1e-3
    assert result.extra["dev_accuracy"] == 0.75
    swept = result.extra["lr_sweep"]
    assert swept["chosen"] == 1e-3 and swept["selected_on"] == "dev" and swept["folder"] == str(sweep)
    assert [(p["lr"], p["dev"], p["test"]) for p in swept["grid"]] == [(1e-4, 0.5, 0.625), (1e-3, 0.75, 0.625),
                                                                      (1e-2, 0.75, 0.625)]
    assert cell.overrides["lr_sweep"] == [1e-4, 1e-3, 1e-2]
    # no datarc in this config: the row says why it has no fingerprint (and is made anyway)
    assert result.extra["data_fingerprint"] is None
    assert "names no downstream_expert.datarc.file_path" in result.extra["data_fingerprint_note"]

    # the digest does not depend on which rate won ...
    record = json.loads((sweep / SWEEP_FILE).read_text())
    record["chosen"] = 1e-2
    (sweep / SWEEP_FILE).write_text(json.dumps(record))
    other_cell, other, other_digest = s3prl_cell(sweep, encoder, cache_dir=tmp_path / "fp")
    assert other.extra["lr"] == 1e-2 and other_digest == digest
    # ... but a run at one fixed rate (the same config) is another recipe
    _, _, single_digest = s3prl_cell(sweep / "lr_1e-02", encoder, cache_dir=tmp_path / "fp")
    assert single_digest != digest

    store = ResultsStore(tmp_path / "r.jsonl")
    assert cli(["bench", "--s3prl-runs", str(sweep), "--encoder", "enc", "--results", str(store.path)]) == 0
    [row] = store.rows()
    assert row["value"] == 0.625 and row["recipe_digest"] == digest and row["mode"] == "s3prl-frozen"
    assert len(row["extra"]["lr_sweep"]["grid"]) == 3
    assert ingest_s3prl_runs([sweep], encoder, store, cache_dir=tmp_path / "fp") == (0, 1)


# ------------------------------------------------------------------------------------------ data fingerprints


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tasks.s3prl_data import prepare_corpus

    return prepare_corpus(corpus, tmp_path_factory.mktemp("s3prl_data"))


def _datarc(prepared, task: str) -> dict:  # type: ignore[no-untyped-def]
    return yaml.safe_load(prepared[task].configs["cpu_smoke"].read_text())


def test_sid_rows_carry_our_cells_fingerprint_of_the_same_data(prepared, corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tasks.fingerprint import data_fingerprint
    from tasks.task_data import load_task_data

    ours = data_fingerprint(load_task_data("voxceleb1", corpus.voxceleb1), tmp_path / "fp")
    fingerprint, note = s3prl_data_fingerprint("voxceleb1", _datarc(prepared, "voxceleb1"), tmp_path / "fp")
    assert note is None and fingerprint is not None
    assert {k: fingerprint[k] for k in ("digest", "clips", "files", "missing")} == {
        k: ours[k] for k in ("digest", "clips", "files", "missing")}
    # a data folder our reader does not see as s3prl does: s3prl's own list, said so, never an error
    config = _datarc(prepared, "voxceleb1")
    extra_wav = tmp_path / "audio"
    (extra_wav / "other" / "wav").mkdir(parents=True)
    for link in Path(config["downstream_expert"]["datarc"]["file_path"]).iterdir():
        (extra_wav / link.name).symlink_to(link.resolve())
    config["downstream_expert"]["datarc"]["file_path"] = str(extra_wav)
    listed, listed_note = s3prl_data_fingerprint("voxceleb1", config, tmp_path / "fp")
    assert "s3prl's own SID file list" in listed_note and listed["clips"] == ours["clips"]
    config["downstream_expert"]["datarc"]["file_path"] = str(tmp_path / "gone")
    assert s3prl_data_fingerprint("voxceleb1", config, tmp_path / "fp")[0] is None


def test_ks_rows_fingerprint_the_lists_s3prl_reads(prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = _datarc(prepared, "speech_commands")
    fingerprint, note = s3prl_data_fingerprint("speech_commands", config, tmp_path / "fp")
    assert "s3prl's own KS file lists" in note and fingerprint is not None
    counts = prepared["speech_commands"].summary["s3prl_examples"]     # from s3prl's own split_dataset
    assert fingerprint["clips"] == {"train": counts["train"], "valid": counts["dev"], "test": counts["test"]}
    again, _ = s3prl_data_fingerprint("speech_commands", config, tmp_path / "fp")
    assert again == fingerprint
    # the hash rule is s3prl's (split_dataset): clip by clip on the prepared folder
    from upstream.s3prl_upstream import compat

    compat.install()
    from s3prl.downstream.speech_commands.expert import split_dataset

    train_root = Path(config["downstream_expert"]["datarc"]["speech_commands_root"])
    train, valid = split_dataset(train_root)
    assert all(ks_hash_role(p.name) == "train" for _, p in train) and all(ks_hash_role(p.name) == "valid"
                                                                         for _, p in valid)
    # the same data copied elsewhere keeps its digest; one clip's bytes edited in the copy changes it
    copy = tmp_path / "copy"
    datarc = config["downstream_expert"]["datarc"]
    shutil.copytree(datarc["speech_commands_root"], copy / "train")
    shutil.copytree(datarc["speech_commands_test_root"], copy / "test")
    datarc.update(speech_commands_root=str(copy / "train"), speech_commands_test_root=str(copy / "test"))
    assert s3prl_data_fingerprint("speech_commands", config, tmp_path / "fp")[0]["digest"] == fingerprint["digest"]
    clip = copy / "train" / next(iter(valid))[1].parent.name / next(iter(valid))[1].name
    clip.write_bytes(clip.read_bytes()[:-2] + b"\x01\x02")
    assert s3prl_data_fingerprint("speech_commands", config, tmp_path / "fp")[0]["digest"] != fingerprint["digest"]


# ------------------------------------------------------------------------------------------ through s3prl


@pytest.mark.e2e
def test_a_real_two_point_sweep_through_run_downstream(prepared, corpus, tiny_encoder_file: Path,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path) -> None:
    from tasks.fingerprint import data_fingerprint
    from tasks.task_data import load_task_data

    sweep = tmp_path / "sid_sweep"
    command = [sys.executable, "-m", "upstream.cli", "s3prl", "--cache-dir", str(tmp_path / "cache"), "--lr-sweep",
               "1e-4", "1e-1", "--lr-points", "2", "--", "-m", "train", "-u", "asit_local", "-k",
               str(tiny_encoder_file), "-d", "voxceleb1", "-c", str(prepared["voxceleb1"].configs["cpu_smoke"]),
               "-p", str(sweep), "-o", "config.runner.eval_dataloaders=['dev']", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}"
    record = json.loads((sweep / SWEEP_FILE).read_text())
    assert record["grid"] == [1e-4, 1e-1] and record["complete"]
    for point in record["points"]:
        folder = sweep / point["expdir"]
        config = yaml.safe_load(next(folder.glob("config_*.yaml")).read_text())
        assert config["optimizer"]["lr"] == point["lr"]                       # -o reached s3prl's config
        assert config["runner"]["eval_dataloaders"] == ["dev"]                # and the user's -o too
        devs = [r.value for r in read_log(folder) if r.split == "dev"]
        assert point["dev"] == max(devs) and point["test"] == last_value(folder, "test", step=0)
        assert point["checkpoint"] in ("dev-best.ckpt", "states-4.ckpt")
    best = max(p["dev"] for p in record["points"])
    assert record["chosen"] == min(p["lr"] for p in record["points"] if p["dev"] == best)
    assert "chosen on dev" in done.stdout

    before = {p["expdir"]: (sweep / p["expdir"] / "log.log").read_text() for p in record["points"]}
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and again.stdout.count("already evaluated") == 2
    assert {name: (sweep / name / "log.log").read_text() for name in before} == before

    store = ResultsStore(tmp_path / "r.jsonl")
    assert ingest_s3prl_runs([sweep], EncoderSpec("tiny", str(tiny_encoder_file)), store,
                             cache_dir=tmp_path / "fp") == (1, 0)
    [row] = store.rows()
    chosen = next(p for p in record["points"] if p["lr"] == record["chosen"])
    assert row["value"] == chosen["test"] and row["extra"]["lr_sweep"]["chosen"] == record["chosen"]
    assert [p["lr"] for p in row["extra"]["lr_sweep"]["grid"]] == [1e-4, 1e-1]
    ours = data_fingerprint(load_task_data("voxceleb1", corpus.voxceleb1), tmp_path / "fp")
    assert row["extra"]["data_fingerprint"]["digest"] == ours["digest"]
