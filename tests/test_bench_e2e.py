"""End to end through the real task runner (tasks.run.run_task) on the generated corpus in every real layout:
the shipped demo suite, every task in both modes, then the leaderboard from the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks.demo_stage import (ACM_SSKD, CONFORMER, CONFORMER_SCRATCH, FBANK, PRETRAINED, SCRATCH, SUPMAM,
                                   demo_suite_overrides,
                                   stage_leaderboard)
from benchmarks.results import ResultsStore
from benchmarks.suite import TASK_PROTOCOLS, load_suite, plan_suite
from benchmarks.table import TASK_LABELS
from upstream.cli import main as cli_main
from upstream.demo import DemoContext


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Probe embeddings go to a fresh cache, not the user's ~/.cache."""
    monkeypatch.setenv("ASIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _check_table(out: Path, models: set[str] = {PRETRAINED, SCRATCH, FBANK}) -> None:
    wide = pd.read_csv(out / "leaderboard.csv")
    ours = wide[wide["Source"] == "ours"]
    assert set(ours["Model"]) == models and set(ours["Mode"]) == {"finetune", "probe (frozen)"}
    assert dict(zip(ours["Model"], ours["Kind"]))[FBANK] == "floor: fbank stats"
    assert dict(zip(ours["Model"], ours["Kind"]))[SCRATCH] == "floor: random init"
    for task, (protocol, _) in TASK_PROTOCOLS.items():
        # the corpus' label sets are not the real datasets': custom protocol columns (SC-V1's SUPERB 12 classes
        # are built by the reader, so its column is the real one)
        [column] = [c for c in wide.columns if c.startswith(TASK_LABELS[task] + " ")]
        assert ("custom-" in column) == (task != "speechcommands_v1"), column
        assert (ours[column] != "—").all(), column
    # the paper's rows appear only in the columns whose protocol the corpus matches
    quoted = wide[wide["Source"].str.startswith("quoted")]
    assert len(quoted) and all((quoted[c] == "—").all() for c in wide.columns if "custom-" in c)
    assert (out / "leaderboard.png").stat().st_size > 0 and (out / "leaderboard.tex").is_file()


@pytest.mark.e2e
def test_every_task_both_modes_through_asit_bench_then_asit_table(corpus, tiny_encoder_file: Path, tmp_path: Path,
                                                                 tiny_conformer_file: Path, cache_dir: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # the peers' exports are plain ViT exports: the tiny ViT file stands in for them (the demo makes the real ones)
    ctx = DemoContext(out_dir=tmp_path, corpus=corpus, encoder=tiny_encoder_file, conformer=tiny_conformer_file,
                      acm_sskd=tiny_encoder_file, supmam=tiny_encoder_file)
    # the demo suite on this corpus, cut to one ESC-50 fold and one finetuning epoch to stay within CI minutes
    sets = [*demo_suite_overrides(ctx, tuple(TASK_PROTOCOLS)), "tasks.esc50.folds=[1]",
            "overrides.finetune.epochs=1"]
    argv = ["bench", "demo_cpu", *[a for s in sets for a in ("--set", s)], "--no-progress"]
    assert cli_main(argv) == 0, capsys.readouterr()

    suite = load_suite("demo_cpu", sets)
    planned = plan_suite(suite)
    assert len(planned) == 7 * 2 * len(TASK_PROTOCOLS)               # encoders × modes × tasks (1 seed, 1 fold)
    assert {r["encoder"] for r in ResultsStore(suite.results).rows()} == {
        PRETRAINED, SCRATCH, FBANK, CONFORMER, CONFORMER_SCRATCH, ACM_SSKD, SUPMAM}
    rows = ResultsStore(suite.results).rows()
    assert sorted(r["key"] for r in rows) == sorted(c.key for c in planned)
    assert all(r["status"] == "ok" and 0.0 <= r["value"] <= 1.0 for r in rows)
    assert {r["metric"] for r in rows if r["task"] == "as20k"} == {"mAP"}
    assert {r["metric"] for r in rows if r["task"] != "as20k"} == {"accuracy"}
    assert all(r["extra"]["protocol"] == r["protocol"] for r in rows)  # the runner ran the protocol we tagged

    assert cli_main(argv) == 0                                         # rerun: nothing left to do
    assert f"{len(planned)} already in" in capsys.readouterr().out
    assert len(ResultsStore(suite.results).rows()) == len(planned)

    out = tmp_path / "board"
    assert cli_main(["table", "--results", str(suite.results), "--out", str(out)]) == 0
    _check_table(out, {PRETRAINED, SCRATCH, FBANK, CONFORMER, CONFORMER_SCRATCH, ACM_SSKD, SUPMAM})
    # a row per objective: the Pretraining column names it
    wide = pd.read_csv(out / "leaderboard.csv")
    named = dict(zip(wide["Model"], wide["Pretraining"]))
    assert named[PRETRAINED].startswith("ASiT") and named[CONFORMER].startswith("wav2vec 2.0 conformer")
    assert named[ACM_SSKD].startswith("ACM-SSKD") and named[SUPMAM].startswith("SupMAM")


@pytest.mark.slow
def test_demo_leaderboard_stage_full_grid(corpus, tiny_encoder_file: Path, tmp_path: Path, cache_dir: Path) -> None:
    ctx = DemoContext(out_dir=tmp_path / "demo", corpus=corpus, encoder=tiny_encoder_file)
    stage_leaderboard(ctx)
    cells = ctx.report["leaderboard_cells"]
    assert cells["failed"] == 0 and cells["ran"] == cells["planned"] == 3 * 2 * (len(TASK_PROTOCOLS) + 4)
    _check_table(ctx.out_dir / "leaderboard")
    assert "asit-tiny-demo" in ctx.report["leaderboard"]
