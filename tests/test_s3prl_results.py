"""s3prl experiment folders -> results-store rows (the real runner's output is covered in test_s3prl_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.results import ResultsStore
from benchmarks.s3prl_results import ingest_s3prl_runs, s3prl_cell
from benchmarks.table import long_table
from tasks.api import EncoderSpec
from upstream.cli import main as cli_main
from upstream.errors import AsitError


def s3prl_expdir(root: Path, downstream: str = "voxceleb1", trainable: bool = False, evaluated: bool = True,
                 checkpoint: str = "/ckpt/enc.pt", selection: str = "hidden_states",
                 config_tag: str = "2026-01-01-10-00-00") -> Path:
    """The files `run_downstream.py -m train` then `-m evaluate` leave in `-p` (args/config per run, log.log)."""
    root.mkdir(parents=True)
    base = {"downstream": downstream, "upstream": "asit_local", "upstream_ckpt": checkpoint, "seed": 1337,
            "upstream_trainable": trainable, "upstream_feature_selection": selection}
    (root / "args_2026-01-01-10-00-00.yaml").write_text(yaml.safe_dump({**base, "mode": "train"}))
    (root / f"config_{config_tag}.yaml").write_text(yaml.safe_dump({"runner": {"total_steps": 200000}}))
    lines = ["train at step 100: 0.5", "dev at step 100: 0.4", "New best on dev at step 100: 0.4"]
    if evaluated:
        (root / "args_2026-01-01-11-00-00.yaml").write_text(yaml.safe_dump({**base, "mode": "evaluate"}))
        (root / "config_2026-01-01-11-00-00.yaml").write_text(yaml.safe_dump({"runner": {"total_steps": 1}}))
        lines.append("test at step 0: 0.625")
    (root / "log.log").write_text("\n".join(lines) + "\n")
    return root


def test_an_evaluated_run_becomes_one_row_tagged_with_protocol_and_mode(tmp_path: Path) -> None:
    checkpoint = tmp_path / "enc.pt"
    checkpoint.write_bytes(b"weights")
    frozen = s3prl_expdir(tmp_path / "sid", checkpoint=str(checkpoint))
    tuned = s3prl_expdir(tmp_path / "ks_ft", downstream="speech_commands", trainable=True, checkpoint=str(checkpoint))
    cell, result, _ = s3prl_cell(frozen, EncoderSpec("enc", str(checkpoint)))
    assert (cell.task, cell.mode, cell.protocol, cell.seed) == ("voxceleb1", "s3prl-frozen", "voxceleb1/iden-split",
                                                                1337)
    assert (result.metric, result.value, result.extra["dev_accuracy"]) == ("accuracy", 0.625, 0.4)
    assert result.extra["total_steps"] == 200000                     # the training run's config, not evaluate's

    store = ResultsStore(tmp_path / "r.jsonl")
    assert cli_main(["bench", "--s3prl-runs", str(frozen), str(tuned), "--encoder", "enc", "--results",
                     str(store.path)]) == 0                          # checkpoint taken from the run's own -k
    rows = {r["mode"]: r for r in store.rows()}
    assert set(rows) == {"s3prl-frozen", "s3prl-finetune"}
    assert rows["s3prl-finetune"]["protocol"] == "superb/ks-v1-12class"
    assert rows["s3prl-finetune"]["task"] == "speechcommands_v1" and rows["s3prl-finetune"]["value"] == 0.625
    assert ingest_s3prl_runs([frozen, tuned], EncoderSpec("enc", str(checkpoint)), store) == (0, 2)
    # `-s last_hidden_state` is a command-line choice, not in s3prl's config: still another cell and table row
    last = s3prl_expdir(tmp_path / "sid_last", checkpoint=str(checkpoint), selection="last_hidden_state")
    assert ingest_s3prl_runs([last], EncoderSpec("enc", str(checkpoint)), store) == (1, 0)
    modes = set(long_table(store.successes())["mode"])
    assert {m for m in modes if m.startswith("s3prl-frozen · recipe ")} and len(modes) == 3


def test_a_config_written_a_second_after_its_args_belongs_to_that_run(tmp_path: Path) -> None:
    # run_downstream.py calls get_time_tag() once per file: args_..-59 and config_..+1 s happen (seen in CI)
    expdir = s3prl_expdir(tmp_path / "sid", config_tag="2026-01-01-10-00-01")
    cell, result, _ = s3prl_cell(expdir, EncoderSpec("enc", "x.pt"))
    assert result.extra["total_steps"] == 200000 and result.extra["s3prl_config"].endswith("10-00-01.yaml")
    # the evaluate run's config (11-00-00) is never taken for the training run's
    (expdir / "config_2026-01-01-10-00-01.yaml").unlink()
    with pytest.raises(AsitError, match="args_2026-01-01-10-00-00.yaml has no matching config"):
        s3prl_cell(expdir, EncoderSpec("enc", "x.pt"))


def test_unusable_folders_are_named(tmp_path: Path) -> None:
    spec = EncoderSpec("enc", "x.pt")
    with pytest.raises(AsitError, match="does not exist"):
        s3prl_cell(tmp_path / "nope", spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsitError, match="empty holds no s3prl training run"):
        s3prl_cell(tmp_path / "empty", spec)
    with pytest.raises(AsitError, match=r"no test result from `-m evaluate`.*asit s3prl -- -m evaluate"):
        s3prl_cell(s3prl_expdir(tmp_path / "trained", evaluated=False), spec)
    with pytest.raises(AsitError, match="downstream 'asr' is not one of ours"):
        s3prl_cell(s3prl_expdir(tmp_path / "asr", downstream="asr"), spec)
    assert cli_main(["bench", "demo_cpu", "--s3prl-runs", "x"]) == 2
