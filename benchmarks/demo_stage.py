"""The last `asit demo` stage: the demo suite on the embedded corpus, then the leaderboard.

ASiT-pretrained tiny encoder vs its floors (the same architecture from scratch, the fbank statistics), probe and
finetune, on all five tasks, plus the
HEAR stage's heareval scores (their own protocol columns) and the s3prl stage's runs (rows of their own) when those
stages ran. The suite is resumable, so rerunning the demo only runs the cells that are missing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tasks.api import EncoderSpec
from upstream.errors import AsitError

from .hear_results import hear_rows
from .results import ResultsStore
from .s3prl_results import s3prl_rows
from .suite import TASK_PROTOCOLS, Runner, load_suite, run_suite
from .table import write_leaderboard

SUITE = "demo_cpu"
PRETRAINED, SCRATCH, FBANK = "asit-tiny-demo", "scratch-tiny-demo", "fbank-stats"
CONFORMER, CONFORMER_SCRATCH = "w2v2-conformer-tiny-demo", "scratch-conformer-tiny-demo"
ACM_SSKD, SUPMAM = "acm-sskd-tiny-demo", "supmam-tiny-demo"
# the demo context's field holding each optional encoder's file: rows whose encoder the demo did not make are left out
OPTIONAL_ENCODERS = {CONFORMER: "conformer", CONFORMER_SCRATCH: "conformer", ACM_SSKD: "acm_sskd", SUPMAM: "supmam"}
# task -> the CorpusPaths field holding its dataset root
CORPUS_FIELDS = {"as20k": "audioset", "esc50": "esc50", "speechcommands_v2": "speechcommands_v2",
                 "speechcommands_v1": "speechcommands_v1", "voxceleb1": "voxceleb1"}


def _literal(path: Any) -> str:
    """A path as a suite value (suite values are format templates: braces must be doubled)."""
    return str(path).replace("{", "{{").replace("}", "}}")


def demo_suite_overrides(ctx: Any, tasks: tuple[str, ...]) -> list[str]:
    """Point the shipped demo suite at this demo's corpus and encoder."""
    sets = [f"vars.demo={_literal(ctx.out_dir)}",
            *(f"encoders.{name}.path={_literal(ctx.encoder)}" for name in (PRETRAINED, SCRATCH, FBANK))]
    for name, attr in OPTIONAL_ENCODERS.items():
        if getattr(ctx, attr, None) is not None:
            sets.append(f"encoders.{name}.path={_literal(getattr(ctx, attr))}")
    for task in tasks:
        root = getattr(ctx.corpus, CORPUS_FIELDS[task], None)
        if root is None:
            raise AsitError(f"the demo corpus has no {task} dataset (CorpusPaths.{CORPUS_FIELDS[task]}); "
                            "regenerate it with the current `asit corpus`")
        sets.append(f"data.{task}={_literal(root)}")
    return sets


def stage_leaderboard(ctx: Any, runner: Runner | None = None) -> None:
    """Run benchmarks/suites/demo_cpu.yaml on ctx.corpus with ctx.encoder (and scratch), write the leaderboard
    into ctx.out_dir/leaderboard and put its Markdown into ctx.report["leaderboard"]. `runner`: the suite's own
    (tasks.run.run_task) unless given."""
    if ctx.encoder is None or ctx.corpus is None:
        raise AsitError("the leaderboard stage needs the corpus and pretrain stages first")
    suite = load_suite(SUITE, demo_suite_overrides(ctx, tuple(TASK_PROTOCOLS)))
    absent = {name for name, attr in OPTIONAL_ENCODERS.items() if getattr(ctx, attr, None) is None}
    if absent:
        ctx.log(f"not made in this demo context, left out of the leaderboard: {', '.join(sorted(absent))}")
        suite = dataclasses.replace(suite, encoders=tuple(e for e in suite.encoders if e.spec.name not in absent))
    out = suite.results.parent
    ctx.log(f"leaderboard: {len(suite.encoders)} encoders × {len(suite.tasks)} tasks × {list(suite.modes)} × "
            f"seeds {list(suite.seeds)} (results in {suite.results}; reruns skip finished cells)")
    report = run_suite(suite, runner=runner, log=ctx.log)
    # the HEAR and s3prl stages' own numbers join the table (HEAR under its own protocols, s3prl as rows of its own)
    pretrained = next(e for e in suite.encoders if e.spec.name == PRETRAINED)
    spec, store = EncoderSpec(PRETRAINED, str(ctx.encoder)), ResultsStore(suite.results)
    ingested: list[dict[str, Any]] = []
    if ctx.report.get("hear"):
        rows = list(hear_rows(Path(ctx.out_dir) / "hear" / "embeddings" / ctx.report["hear"]["module"], spec,
                              pretraining=pretrained.pretraining))
        added, present = store.append_all(rows)
        ingested += rows
        ctx.log(f"heareval scores: {added} row(s) added to {suite.results} ({present} already there)")
    if ctx.report.get("s3prl"):
        rows = s3prl_rows([run["expdir"] for run in ctx.report["s3prl"].values()], spec,
                          pretraining=pretrained.pretraining)
        added, present = store.append_all(rows)
        ingested += rows
        ctx.log(f"s3prl results: {added} row(s) added to {suite.results} ({present} already there)")
    # this run's cells only: the store keeps rows of earlier demo versions (other recipes), which stay out
    files = write_leaderboard([suite.results], out, keys={*report.keys, *(row["key"] for row in ingested)},
                              title="asit demo: ASiT, ACM-SSKD, SupMAM and wav2vec 2.0 conformer vs scratch (tiny, "
                                    "embedded corpus)")
    ctx.report["leaderboard"] = files.text
    ctx.report["leaderboard_files"] = {"markdown": str(files.markdown), "csv": str(files.csv),
                                       "long_csv": str(files.long_csv), "latex": str(files.latex),
                                       "png": str(files.png), "results": str(suite.results)}
    ctx.report["leaderboard_cells"] = {"planned": report.planned, "skipped": report.skipped,
                                       "ran": len(report.succeeded),
                                       "already_in_store": len(report.already_in_store),
                                       "failed": len(report.failed)}
    ctx.report["leaderboard_audit"] = files.audit
    ctx.log("leaderboard (mean ± std over seeds × folds, %):\n" + files.text + "\n" + files.audit)
    ctx.log(f"leaderboard written to {files.markdown} (+ .csv, .tex, .png)")
    if report.failed:
        raise AsitError(f"{len(report.failed)} leaderboard cell(s) failed, e.g. {report.failed[0][0]}: "
                        f"{report.failed[0][1]}; rerun `asit demo` to retry them (finished cells are kept)")


__all__ = ["stage_leaderboard", "demo_suite_overrides"]
