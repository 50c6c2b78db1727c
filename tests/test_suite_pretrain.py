"""Suites that pretrain their own encoders (benchmarks/suite_pretrain.py): every objective on the same data and
budget, one run per seed, reused on reruns, refused when a run folder does not match the suite."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.results import ResultsStore, checkpoint_identity
from benchmarks.suite import load_suite, parse_suite, plan_suite, run_suite
from benchmarks.suite_pretrain import MARKER
from benchmarks.table import load_results, long_table, wide_table
from upstream.config import deep_merge, parse_overrides
from upstream.errors import AsitError

from conftest import TINY_PRETRAIN_OVERRIDES
from test_suite import recording_test_runner

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RECON_ONLY = {"objective": {"loss_weights": {"recon": 1.0, "local": 0.0, "global": 0.0}}}


def _raw(root: Path, clips: Path) -> dict:  # type: ignore[type-arg]
    data = root / "data" / "esc50"
    data.mkdir(parents=True, exist_ok=True)
    shared = deep_merge(parse_overrides(TINY_PRETRAIN_OVERRIDES),
                        {"data": {"source": "{clips}"}, "trainer": {"max_epochs": 1}})
    return {
        "name": "h2h",
        "vars": {"root": str(root), "clips": str(clips)},
        "pretrain": {"overrides": shared,
                     "runs": {"asit": {"config": "demo_tiny"},
                              "asit-recon": {"config": "demo_tiny", "overrides": RECON_ONLY}}},
        "encoders": {"asit": {"pretrained": "asit"}, "asit-recon": {"pretrained": "asit-recon"},
                     "scratch-vit": {"pretrained": "asit", "init": "scratch"}},
        "data": {"esc50": str(data)}, "tasks": {"esc50": {"folds": [1]}}, "modes": ["probe"], "seeds": [0, 1],
        "results": "{root}/results.jsonl", "work_dir": "{root}/work",
    }


def test_a_suite_pretrains_each_run_per_seed_and_measures_that_seed_with_it(tmp_path: Path, tone_folder: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _raw(tmp_path, tone_folder)
    suite = parse_suite(raw)
    with pytest.raises(AsitError, match="pretraining run asit seed 0 has not finished"):
        plan_suite(suite)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("ASIT_TEST_RUNNER_LOG", str(log))
    report = run_suite(suite, runner=recording_test_runner, progress=False, log=lambda _: None)
    assert report.complete and len(report.succeeded) == 3 * 2

    folders = {(run, seed): tmp_path / "work" / "_pretrain" / run / f"seed{seed}" for run in ("asit", "asit-recon")
               for seed in (0, 1)}
    for (run, seed), folder in folders.items():
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["seed"] == seed and config["data"]["source"] == str(tone_folder)
        assert config["trainer"]["max_epochs"] == 1 and config["encoder"]["depth"] == 2     # shared overrides
        weights = config["objective"].get("loss_weights", {})
        assert (weights == RECON_ONLY["objective"]["loss_weights"]) == (run == "asit-recon")
        meta = torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True)["meta"]
        assert meta["global_step"] == 2                                        # 8 clips / batch 4, one epoch
    identities = {key: checkpoint_identity(folder / "encoder.pt") for key, folder in folders.items()}
    assert len(set(identities.values())) == 4                                  # every run and seed trained apart

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    rows = ResultsStore(tmp_path / "results.jsonl").rows()
    for row in rows:                       # the cells of seed s measured the seed-s encoder of their run
        run = "asit" if row["encoder"] == "scratch-vit" else row["encoder"]
        assert row["checkpoint"] == str(folders[(run, row["seed"])] / "encoder.pt")
        assert row["checkpoint_sha256"] == identities[(run, row["seed"])]
    assert {r["pretrain_run"] for r in rows} == {"asit", "asit-recon"}
    # one checkpoint per seed by design: the table averages the seeds instead of splitting the encoder by identity
    wide = wide_table(long_table(load_results([tmp_path / "results.jsonl"])))
    assert sorted(wide["Model"]) == ["asit", "asit-recon", "scratch-vit"]
    assert all("(n=2)" in cell for cell in wide.iloc[:, -1])
    texts = {r["encoder"]: r["pretraining"] for r in rows}
    assert texts["asit-recon"].startswith("asit (asit-recon), " + str(tone_folder) + ", 1 epochs, batch 4")
    assert texts["scratch-vit"] == "none (scratch)"

    # a rerun trains nothing and runs nothing
    stamps = {key: (folder / "encoder.pt").stat().st_mtime_ns for key, folder in folders.items()}
    report = run_suite(parse_suite(raw), runner=recording_test_runner, progress=False, log=lambda _: None)
    assert report.skipped == 6 and not report.succeeded
    assert stamps == {key: (folder / "encoder.pt").stat().st_mtime_ns for key, folder in folders.items()}
    assert len(log.read_text().splitlines()) == len(calls)

    # the same folders under another budget are refused, not measured under the suite's name
    longer = copy.deepcopy(raw)
    longer["pretrain"]["overrides"]["trainer"]["max_epochs"] = 2
    with pytest.raises(AsitError, match=r"pretraining asit seed 0: .* holds a run made with another config"):
        run_suite(parse_suite(longer), runner=recording_test_runner, progress=False, log=lambda _: None)


def test_a_run_folder_the_suite_did_not_start_is_refused(tmp_path: Path, tone_folder: Path) -> None:
    raw = _raw(tmp_path, tone_folder)
    raw["pretrain"]["runs"].pop("asit-recon")
    raw["encoders"].pop("asit-recon")
    foreign = tmp_path / "work" / "_pretrain" / "asit" / "seed0"
    foreign.mkdir(parents=True)
    (foreign / "encoder.pt").write_bytes(b"someone else's encoder")
    with pytest.raises(AsitError, match="did not start"):
        run_suite(parse_suite(raw), runner=recording_test_runner, progress=False, log=lambda _: None)
    assert not (foreign / MARKER).exists()


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw["encoders"]["asit"].update(path="x.pt"), "either a path or `pretrained: RUN`"),
    (lambda raw: raw["encoders"]["asit"].update(pretrained="nope"), "'nope' is not a run of the pretrain section"),
    (lambda raw: raw["pretrain"]["runs"]["asit"].update(config="no_such_config"), "pretrain.runs.asit"),
    (lambda raw: raw["pretrain"]["runs"]["asit"].update(overrides={"trainer": {"max_epochz": 3}}),
     "pretrain.runs.asit.*max_epochz"),
    (lambda raw: raw["pretrain"].update(run={}), "pretrain has unknown key"),
])
def test_pretrain_sections_are_checked_before_anything_trains(tmp_path: Path, tone_folder: Path, edit,
                                                              message: str) -> None:
    raw = _raw(tmp_path, tone_folder)
    edit(raw)
    with pytest.raises(AsitError, match=message):
        parse_suite(raw)
    assert not (tmp_path / "work").exists()


def test_the_shipped_head_to_head_suite_lists_every_unlabelled_objective_with_its_floors(tmp_path: Path) -> None:
    suite = load_suite("head_to_head_cpu", [f"vars.devsets={tmp_path}"])
    objectives = {run.objective for run in suite.pretrain}
    assert objectives == {"asit", "acm_sskd", "wav2vec2_conformer"}
    shared = {json.dumps([run.config["data"]["source"], run.config["data"]["batch_size"],
                          run.config["trainer"]["max_epochs"]]) for run in suite.pretrain}
    assert shared == {json.dumps([str(tmp_path), 8, 5])}                     # same data, batch and epochs
    weights = {run.name: run.config["objective"].get("loss_weights") for run in suite.pretrain}
    assert weights["asit-recon"] == {"recon": 1.0, "local": 0.0, "global": 0.0}
    inits = {e.spec.init for e in suite.encoders}
    assert inits == {"pretrained", "scratch", "fbank_stats"}
    assert {e.pretrained for e in suite.encoders if e.spec.init == "pretrained"} == {r.name for r in suite.pretrain}


def test_the_leaderboard_groups_pretrained_rows_by_their_pretraining_text(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    base = {"store_version": 1, "status": "ok", "task": "esc50", "mode": "probe",
            "protocol": "esc50/train4-test1", "seed": 0, "fold": 1, "metric": "accuracy", "value": 0.5,
            "init": "pretrained", "checkpoint_sha256": "", "extra": {}}
    for key, encoder, pretraining in (("1", "a-model", "wav2vec2_conformer (w2v2), x"),
                                      ("2", "b-model", "acm_sskd (acm), x"), ("3", "c-model", "asit (asit), x")):
        store.append({**base, "key": key, "encoder": encoder, "pretraining": pretraining})
    wide = wide_table(long_table(load_results([store.path])))
    assert list(wide["Model"]) == ["b-model", "c-model", "a-model"]
    assert os.path.getsize(store.path) > 0


def test_dry_run_lists_the_pretraining_still_to_do(tmp_path: Path, tone_folder: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    from upstream.cli import main as cli_main

    suite_file = tmp_path / "h2h.yaml"
    suite_file.write_text(yaml.safe_dump(_raw(tmp_path, tone_folder)))
    assert cli_main(["bench", str(suite_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "todo  pretrain asit seed 0" in out and "todo  pretrain asit-recon seed 1" in out
    assert "4 pretraining run(s) to train first" in out and not (tmp_path / "work").exists()


def test_runs_and_encoders_can_be_left_out_from_the_command_line(tmp_path: Path) -> None:
    sets = [f"vars.devsets={tmp_path}", "pretrain.runs.asit-local=false"]
    with pytest.raises(AsitError, match="encoders.asit-local.pretrained 'asit-local' is not a run"):
        load_suite("head_to_head_cpu", sets)
    suite = load_suite("head_to_head_cpu", [*sets, "encoders.asit-local=false"])
    assert "asit-local" not in {r.name for r in suite.pretrain} | {e.spec.name for e in suite.encoders}
    assert len(suite.pretrain) == 10 and len(suite.encoders) == 13
