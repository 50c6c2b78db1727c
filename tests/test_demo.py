"""`asit demo`: stage order, resumable output folder, and (slow) the whole README command on a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from upstream.cli import main as cli_main
from upstream.demo import LOSS_TERMS, STAGES, DemoContext, run_demo

from conftest import TINY_PRETRAIN_OVERRIDES


def test_stages_run_in_order_on_an_absolute_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [name for name, _ in STAGES] == ["corpus", "pretrain", "pretrain_conformer", "pretrain_peers", "hear",
                                          "s3prl", "leaderboard"]
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, Path]] = []

    def stage(name: str):  # type: ignore[no-untyped-def]
        def run(ctx: DemoContext) -> None:
            seen.append((name, ctx.out_dir))
            ctx.report[name] = "ran"
        return run

    ctx = DemoContext(out_dir=Path("relative_out"))
    report = run_demo(ctx, [(name, stage(name)) for name, _ in STAGES])
    # stages hand paths to subprocesses running in other folders (s3prl, heareval): they must be absolute
    assert [name for name, _ in seen] == [name for name, _ in STAGES]
    assert all(out == tmp_path / "relative_out" and out.is_absolute() for _, out in seen)
    summary = json.loads((tmp_path / "relative_out" / "demo_summary.json").read_text())
    assert {k: summary[k] for k, _ in STAGES} == {k: "ran" for k, _ in STAGES} and summary == json.loads(
        json.dumps(report, default=str))


@pytest.mark.slow
def test_the_readme_demo_command_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`asit demo --out <relative>` with a 2-block encoder and 2 epochs: every stage, then a rerun that resumes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASIT_CACHE_DIR", str(tmp_path / "cache"))
    overrides = [*TINY_PRETRAIN_OVERRIDES, "trainer.max_epochs=2"]
    assert cli_main(["demo", "--out", "out", *overrides]) == 0
    summary = json.loads((tmp_path / "out" / "demo_summary.json").read_text())
    assert set(summary["pretrain"]) == {"loss_recon", "loss_local", "loss_global", "loss"}
    assert "teacher_entropy_cls_ratio" in summary["pretrain_health"]
    assert set(summary["pretrain_conformer"]) == {"contrastive", "diversity", "feature_penalty", "loss"}
    assert all(row["last"] < row["first"] for row in summary["pretrain_conformer"].values())
    assert set(summary["pretrain_acm_sskd"]) == set(LOSS_TERMS["acm_sskd"])
    assert set(summary["pretrain_supmam"]) == {"recon", "cls", "loss"}
    assert all(name in summary["leaderboard"] for name in ("acm-sskd-tiny-demo", "supmam-tiny-demo"))
    assert summary["hear"]["validator"] == "passed" and summary["hear"]["validator_conformer"] == "passed"
    assert all(name in summary["leaderboard"] for name in ("w2v2-conformer-tiny-demo", "scratch-conformer-tiny-demo"))
    assert summary["leaderboard_cells"]["failed"] == 0 and "asit-tiny-demo" in summary["leaderboard"]
    assert "s3prl frozen" in summary["leaderboard"] and "HEAR MLP (frozen)" in summary["leaderboard"]
    assert cli_main(["demo", "--out", "out", *overrides]) == 0            # everything found done
    again = json.loads((tmp_path / "out" / "demo_summary.json").read_text())
    assert again["leaderboard_cells"]["ran"] == 0
