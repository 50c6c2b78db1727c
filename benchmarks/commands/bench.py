"""asit bench SUITE [--set KEY=VALUE ...] [--results PATH]
   asit bench --hear-scores DIR --encoder NAME --checkpoint P | asit bench --s3prl-runs EXPDIR ... --encoder NAME

Runs a suite (resumable: rerun the same command after a crash) or adds heareval's / s3prl's own scores to a results
store.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from upstream.errors import AsitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", metavar="SUITE",
                        help="suite YAML file, or the name of a shipped suite (demo_cpu, paper_gpu)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a suite key, e.g. --set data.esc50=/data/ESC-50-master --set seeds=[0,1,2]")
    parser.add_argument("--results", help="results store (JSON lines) instead of the suite's `results`")
    parser.add_argument("--work-dir", help="folder for the cells' working files instead of the suite's `work_dir`")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and whether each is done; run none")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    hear = parser.add_argument_group("HEAR / s3prl ingestion (instead of a suite)")
    hear.add_argument("--hear-scores", metavar="DIR",
                      help="heareval embeddings folder whose task folders hold test.predicted-scores.json")
    hear.add_argument("--s3prl-runs", nargs="+", metavar="EXPDIR",
                      help="s3prl experiment folders (-p) trained and evaluated by `asit s3prl`")
    hear.add_argument("--encoder", help="row label of the encoder that produced the embeddings")
    hear.add_argument("--checkpoint", help="that encoder's checkpoint file (its content hash is recorded); "
                      "for --s3prl-runs the default is the run's own -k")
    hear.add_argument("--hear-module", default="", metavar="MODULE",
                      help="--hear-scores of someone else's HEAR 2021 module: its import name (--checkpoint is then "
                           "its model file, if it takes one), so the rows share the identity of its probe rows")
    hear.add_argument("--hear-options", default="", metavar="JSON",
                      help="with --hear-module: the load_model keywords heareval ran it with (JSON object)")
    hear.add_argument("--init", default="pretrained", choices=("pretrained", "scratch"))
    hear.add_argument("--pretraining", default="", help="what the encoder was pretrained on (for the table)")


def run(args: argparse.Namespace) -> int:
    if sum(map(bool, (args.suite, args.hear_scores, args.s3prl_runs))) != 1:
        raise AsitError("give either a SUITE, --hear-scores DIR or --s3prl-runs EXPDIR ...")
    if args.hear_scores:
        return _ingest(args)
    if args.s3prl_runs:
        return _ingest_s3prl(args)
    from ..suite import load_suite, plan_suite, run_suite

    suite = load_suite(args.suite, args.sets, results=args.results, work_dir=args.work_dir)
    if args.dry_run:
        from ..results import ResultsStore
        from ..suite_pretrain import pending

        waiting = pending(suite.pretrain, suite.seeds, suite.work_dir)
        for run in waiting:
            print(f"todo  pretrain {run}")
        if waiting:
            print(f"{len(waiting)} pretraining run(s) to train first (under {suite.work_dir}); the cells are "
                  "planned once their encoders exist")
            return 0

        finished = ResultsStore(suite.results).finished_keys()
        cells = plan_suite(suite, check_data=False)
        for cell in cells:
            print(f"{'done' if cell.key in finished else 'todo'}  {cell.key[:12]}  {cell.label}")
        print(f"{len(cells)} cells, {sum(c.key in finished for c in cells)} done; results {suite.results}")
        return 0
    report = run_suite(suite, progress=not args.no_progress)
    return 0 if report.complete else 1


def _ingest(args: argparse.Namespace) -> int:
    from tasks.api import EncoderSpec

    from ..hear_results import ingest_hear_scores
    from ..results import ResultsStore

    if not args.encoder or not (args.checkpoint or args.hear_module):
        raise AsitError("--hear-scores needs --encoder NAME and --checkpoint PATH (or --hear-module MODULE)")
    if args.hear_module:
        from tasks.commands import hear_options

        spec = EncoderSpec(args.encoder, args.checkpoint or "", args.init, module=args.hear_module,
                           options=hear_options(args.hear_options))
    else:
        if args.hear_options:
            raise AsitError("--hear-options applies to --hear-module only")
        spec = EncoderSpec(args.encoder, args.checkpoint, args.init)
    store = ResultsStore(args.results or Path("results") / "hear.jsonl")
    added, present = ingest_hear_scores(args.hear_scores, spec, store, pretraining=args.pretraining)
    print(f"added {added} HEAR row(s) to {store.path} ({present} already there)")
    return 0


def _ingest_s3prl(args: argparse.Namespace) -> int:
    from tasks.api import EncoderSpec

    from ..results import ResultsStore
    from ..s3prl_results import ingest_s3prl_runs, training_run

    if not args.encoder:
        raise AsitError("--s3prl-runs needs --encoder NAME (the row label)")
    checkpoint = args.checkpoint or training_run(Path(args.s3prl_runs[0]))[0].get("upstream_ckpt")
    if not checkpoint:
        raise AsitError(f"{args.s3prl_runs[0]} names no upstream checkpoint (-k); pass --checkpoint PATH")
    store = ResultsStore(args.results or Path("results") / "s3prl.jsonl")
    added, present = ingest_s3prl_runs(args.s3prl_runs, EncoderSpec(args.encoder, str(checkpoint), args.init),
                                       store, pretraining=args.pretraining)
    print(f"added {added} s3prl row(s) to {store.path} ({present} already there)")
    return 0
