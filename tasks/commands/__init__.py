"""`asit finetune` and `asit probe`: one task, one encoder, the task's recipe (+ overrides); prints the metric."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from upstream.errors import AsitError

from ..api import TASKS, EncoderSpec, TaskCell
from ..recipes import load_recipe, recipe_digest, recipe_yaml


def add_task_arguments(parser: argparse.ArgumentParser, mode: str) -> None:
    parser.add_argument("task", choices=TASKS, help="benchmark")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides, e.g. epochs=10 lr=5e-4 dataset.missing=error")
    parser.add_argument("--encoder", help="encoder file: our export, a Lightning pretraining checkpoint (teacher) "
                                          "or an official ASiT checkpoint")
    parser.add_argument("--scratch", action="store_true",
                        help="same architecture and frontend, freshly initialised weights (the paper's Scratch row)")
    parser.add_argument("--data", help="the dataset's root folder in its own layout")
    parser.add_argument("--recipe", default="",
                        help=f"recipe name (tasks/recipes, default <task>_{mode}) or a YAML file")
    parser.add_argument("--fold", type=int, action="append", default=None,
                        help="esc50: held-out test fold (repeatable; default: all five, mean reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help=f"output folder (default runs/{mode}/<task>/<encoder>-<init>-seed<S>[-fold<F>]-<recipe>)")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    # KEY=VALUE overrides come after the options (`asit finetune esc50 --encoder E --data D epochs=2`), which plain
    # parse_args rejects for a nargs="*" positional; argparse's intermixed parsing is made for exactly this.
    parser.parse_args = parser.parse_intermixed_args  # type: ignore[method-assign]


def check_folds(given: list[int], data: str, recipe) -> None:  # type: ignore[no-untyped-def]
    """Every --fold must name a fold of the dataset, once: checked before the first fold runs (each fold can take
    hours; a typo in the last one should not surface after the others have run)."""
    repeated = sorted({fold for fold in given if given.count(fold) > 1})
    if repeated:
        raise AsitError(f"--fold {', '.join(map(str, repeated))} given more than once")
    from ..task_data import read_index

    folds = read_index("esc50", data, recipe.dataset).folds
    unknown = [fold for fold in given if fold not in folds]
    if unknown:
        raise AsitError(f"--fold {', '.join(map(str, unknown))}: {data} has no such esc50 fold (its folds: "
                        f"{', '.join(map(str, folds))}); nothing was run")


def run_task_command(args: argparse.Namespace, mode: str) -> int:
    recipe = load_recipe(args.task, mode, args.recipe, args.overrides)
    if args.print_recipe:
        print(recipe_yaml(recipe), end="")
        return 0
    if not args.encoder or not args.data:
        raise AsitError("--encoder and --data are required (or --print-recipe)")
    if not Path(args.data).exists():
        raise AsitError(f"--data {args.data} does not exist")
    if args.fold and args.task != "esc50":
        raise AsitError(f"--fold applies to esc50 only; {args.task} has official splits")
    if args.fold:
        check_folds(args.fold, args.data, recipe)
    folds: list[int | None] = list(args.fold) if args.fold else ([1, 2, 3, 4, 5] if args.task == "esc50" else [None])

    from ..run import PROTOCOLS, run_task  # heavy imports only when running

    init = "scratch" if args.scratch else "pretrained"
    encoder = EncoderSpec(name=Path(args.encoder).stem, path=str(args.encoder), init=init)
    values = []
    for fold in folds:
        suffix = f"-fold{fold}" if fold is not None else ""
        work_dir = args.work_dir or Path("runs") / mode / args.task / (
            f"{encoder.name}-{init}-seed{args.seed}{suffix}-{recipe_digest(recipe)[:8]}")
        if args.work_dir and len(folds) > 1:
            work_dir = Path(args.work_dir) / f"fold{fold}"
        cell = TaskCell(encoder=encoder, task=args.task, mode=mode, protocol=PROTOCOLS[args.task], seed=args.seed,
                        fold=fold, data_root=str(args.data), recipe=args.recipe,
                        overrides=dict(_as_mapping(args.overrides)))
        result = run_task(cell, work_dir)
        values.append(result.value)
        report = result.extra.get("dataset_report", {})
        if any(report.get("missing", {}).values()):
            missing = ", ".join(f"{split} {count} of {report['listed'][split]}"
                                for split, count in report["missing"].items())
            print(f"asit {mode}: {args.task}: listed clips not stored locally were left out ({missing}; "
                  f"dataset.missing={report['missing_policy']}); the result records the counts", flush=True)
        where = f" fold {fold}" if fold is not None else ""
        counts = f"train {result.extra.get('n_train')}, test {result.extra.get('n_test')}"
        print(f"asit {mode}: {args.task}{where} {result.metric} {result.value:.4f} ({counts}) -> {work_dir}",
              flush=True)
    if len(values) > 1:
        spread = statistics.stdev(values)
        print(f"asit {mode}: {args.task} {result.metric} mean {statistics.mean(values):.4f} ± {spread:.4f} over "
              f"{len(values)} folds")
    return 0


def _as_mapping(overrides: list[str]) -> dict:
    from upstream.config import parse_overrides

    return parse_overrides(overrides)
