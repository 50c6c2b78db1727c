"""`asit finetune` and `asit probe`: one task, one encoder, the task's recipe (+ overrides); prints the metric."""

from __future__ import annotations

import argparse
import json
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
                                          "or an official ASiT checkpoint"
                                          + ("; with --hear-module, the module's model file" if mode == "probe"
                                             else ""))
    parser.add_argument("--scratch", action="store_true",
                        help="same architecture and frontend, freshly initialised weights (the paper's Scratch row)")
    if mode == "probe":
        parser.add_argument("--hear-module", metavar="MODULE", default="",
                            help="probe an installed HEAR 2021 module (someone else's model, e.g. a BYOL-A or PaSST "
                                 "package's HEAR module) instead of one of our checkpoints; --encoder is then its "
                                 "model file, if it takes one")
        parser.add_argument("--hear-options", metavar="JSON", default="",
                            help="with --hear-module: load_model's keyword arguments as a JSON object, as heareval's "
                                 "--model-options")
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
    if not args.data or not (args.encoder or getattr(args, "hear_module", "")):
        alternative = "; a probe may name --hear-module MODULE instead of --encoder" if mode == "probe" else ""
        raise AsitError(f"--encoder and --data are required (or --print-recipe){alternative}")
    encoder = encoder_spec(args)
    if not Path(args.data).exists():
        raise AsitError(f"--data {args.data} does not exist")
    if args.fold and args.task != "esc50":
        raise AsitError(f"--fold applies to esc50 only; {args.task} has official splits")
    if args.fold:
        check_folds(args.fold, args.data, recipe)
    folds: list[int | None] = list(args.fold) if args.fold else ([1, 2, 3, 4, 5] if args.task == "esc50" else [None])

    from ..run import PROTOCOLS, run_task  # heavy imports only when running

    values = []
    for fold in folds:
        suffix = f"-fold{fold}" if fold is not None else ""
        work_dir = args.work_dir or Path("runs") / mode / args.task / (
            f"{encoder.name}-{encoder.init}-seed{args.seed}{suffix}-{recipe_digest(recipe)[:8]}")
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


def encoder_spec(args: argparse.Namespace) -> EncoderSpec:
    """The encoder the command names: our checkpoint (`--encoder`, `--scratch`) or, for probes, a HEAR module
    (`--hear-module`, its model file as `--encoder`, `--hear-options`)."""
    module = str(getattr(args, "hear_module", "") or "").strip()
    options_text = str(getattr(args, "hear_options", "") or "")
    if not module:
        if options_text:
            raise AsitError("--hear-options applies to --hear-module only")
        init = "scratch" if args.scratch else "pretrained"
        return EncoderSpec(name=Path(args.encoder).stem, path=str(args.encoder), init=init)
    if args.scratch:
        raise AsitError(f"--scratch: the HEAR module {module} has no random-init twin (a foreign module cannot be "
                        "re-initialised); drop --scratch")
    options = hear_options(options_text)
    if args.encoder and not Path(args.encoder).is_file():
        raise AsitError(f"--encoder {args.encoder}: the HEAR module's model file does not exist")
    return EncoderSpec(name=module, path=str(args.encoder or ""), module=module, options=options)


def hear_options(text: str) -> dict:
    """--hear-options: a HEAR module's load_model keywords as a JSON object ("" = none)."""
    try:
        options = json.loads(text) if text else {}
    except ValueError as exc:
        raise AsitError(f"--hear-options is not JSON ({exc})") from None
    if not isinstance(options, dict):
        raise AsitError(f"--hear-options must be a JSON object of load_model keywords, got {text}")
    return options


def _as_mapping(overrides: list[str]) -> dict:
    from upstream.config import parse_overrides

    return parse_overrides(overrides)
