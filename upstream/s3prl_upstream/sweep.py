"""`asit s3prl --lr-sweep LOW HIGH [--lr-points N] -- <train args> -p EXPDIR`: SUPERB's learning-rate search.

SUPERB's numbers come from searching the downstream learning rate (s3prl's `downstream/*/ks.sh`, `sid.sh`), and a
frozen upstream's SID accuracy can sit far below the leaderboard at the default rate. The sweep runs s3prl's own
`-m train` once per point of a log-scale grid, into `EXPDIR/lr_<lr>` with `-o config.optimizer.lr=<lr>` (merged with
the user's `-o`: s3prl separates assignments with `,,`), then `-m evaluate` of the checkpoint s3prl kept for the best
dev score (`dev-best.ckpt`; the last `states-*.ckpt` when there is none, which the point records). The chosen point is
the one with the best dev accuracy in its `log.log` (ties: the smaller rate): selection never looks at test.

`EXPDIR/lr_sweep.json` (written atomically after every phase, so an interrupted sweep shows how far it got) keeps
every point's `{lr, expdir, dev, dev_step, test, checkpoint}`, the `chosen` rate and the `metric`. Rerunning the same
command skips the points whose folder already holds a finished evaluation, evaluates points that were trained but
not evaluated, and resumes (s3prl's `-a`) points whose training stopped part-way; a rerun with a wider or denser grid
adds its new points to the same record. `asit bench --s3prl-runs EXPDIR` ingests the chosen point as one row.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..atomic import atomic_write_text
from ..cli import int_at_least
from ..errors import AsitError
from . import TASKS
from .results import read_log

SWEEP_FILE = "lr_sweep.json"
SWEEP_VERSION = 1
LR_KEY = "config.optimizer.lr"
METRIC = "accuracy"            # what the speech_commands / voxceleb1 downstreams log as `<split> at step N: v`
SIGNIFICANT = 3                # grid rates are rounded to 3 significant digits, the same in folder names and JSON

Runner = Callable[[list[str], Path], None]     # (run_downstream argv, voxceleb1 cache dir) -> None


# ------------------------------------------------------------------------------------------ the grid


def lr_label(lr: float) -> str:
    """A rate as the folder name and `-o` value write it: 3 significant digits, trailing zeros dropped (`1e-04`,
    `2.15e-04`); `float(lr_label(x))` is the rate the point trains with."""
    mantissa, exponent = f"{lr:.{SIGNIFICANT - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


def default_points(low: float, high: float) -> int:
    """One point per decade, both ends included, at least 2."""
    return max(2, round(math.log10(high / low)) + 1)


def lr_grid(low: float, high: float, points: int | None = None) -> list[float]:
    """`points` rates evenly spaced in log scale from `low` to `high` (both included), each rounded to 3 significant
    digits (default count: `default_points`)."""
    check_range(low, high)
    if float(lr_label(low)) == float(lr_label(high)):
        raise AsitError(f"--lr-sweep LOW HIGH: {low:g} and {high:g} are the same rate at {SIGNIFICANT} significant "
                        "digits")
    count = default_points(low, high) if points is None else points
    if count < 2:
        raise AsitError(f"--lr-points must be at least 2, got {count}")
    step = (math.log(high) - math.log(low)) / (count - 1)
    grid = [float(lr_label(math.exp(math.log(low) + i * step))) for i in range(count)]
    grid[0], grid[-1] = float(lr_label(low)), float(lr_label(high))
    if len(set(grid)) != len(grid):
        raise AsitError(f"--lr-points {count}: the grid from {lr_label(low)} to {lr_label(high)} repeats rates at "
                        f"{SIGNIFICANT} significant digits ({', '.join(map(lr_label, grid))}); use fewer points")
    return grid


def check_range(low: float, high: float) -> None:
    """LOW and HIGH of `--lr-sweep`: finite, positive, HIGH above LOW."""
    for name, value in (("LOW", low), ("HIGH", high)):
        if not math.isfinite(value) or value <= 0:
            raise AsitError(f"--lr-sweep {name} must be a positive learning rate, got {value:g}")
    if not high > low:
        raise AsitError(f"--lr-sweep LOW HIGH: HIGH ({high:g}) must be greater than LOW ({low:g})")


def positive_rate(text: str) -> float:
    """argparse `type` for a learning rate (argparse names the option in its error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive learning rate, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive learning rate, got {text!r}")
    return value


class RangeAction(argparse.Action):
    """`--lr-sweep LOW HIGH`, refused at parsing unless HIGH > LOW."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        low, high = values
        if not high > low:
            raise argparse.ArgumentError(self, f"HIGH ({high:g}) must be greater than LOW ({low:g})")
        setattr(namespace, self.dest, (low, high))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("learning-rate sweep (SUPERB's search; see docs/s3prl.md)")
    group.add_argument("--lr-sweep", nargs=2, metavar=("LOW", "HIGH"), type=positive_rate, action=RangeAction,
                       help="train once per rate of a log-scale grid from LOW to HIGH into EXPDIR/lr_<rate>, "
                            "evaluate each point's best-dev checkpoint, choose on dev, record all in "
                            f"EXPDIR/{SWEEP_FILE}; give the -m train arguments with -p EXPDIR after --")
    group.add_argument("--lr-points", type=int_at_least(2), default=None, metavar="N",
                       help="grid points, ends included (default: one per decade, at least 2)")


# ------------------------------------------------------------------------------------------ arguments


def _probe() -> argparse.ArgumentParser:
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for short, long in (("-m", "--mode"), ("-e", "--past_exp"), ("-p", "--expdir"), ("-o", "--override"),
                        ("-d", "--downstream")):
        probe.add_argument(short, long)
    probe.add_argument("-a", "--auto_resume", action="store_true")
    probe.add_argument("--device")
    return probe


def without_option(argv: Sequence[str], short: str | None, long: str) -> list[str]:
    """`argv` with every occurrence of an option and its value removed (`-p X`, `-pX`, `--expdir X`,
    `--expdir=X`)."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == long or (short is not None and token == short):
            skip = True
        elif token.startswith(long + "=") or (short is not None and token.startswith(short)
                                               and not token.startswith("--") and len(token) > 2):
            pass
        else:
            out.append(token)
    return out


@dataclass(frozen=True)
class SweepArgs:
    expdir: Path
    train_args: list[str]           # the user's train arguments, without -p and -o
    override: str | None            # the user's -o, merged into every point's
    device: str | None
    downstream: str

    def point_argv(self, folder: Path, lr: float) -> list[str]:
        """s3prl's train arguments of one point: the user's, its own -p, and -o with the point's rate last (s3prl
        applies assignments in order, so the rate wins)."""
        assignment = f"{LR_KEY}={lr_label(lr)}"
        merged = f"{self.override},,{assignment}" if self.override else assignment
        return [*self.train_args, "-p", str(folder), "-o", merged]

    def identity(self) -> list[str]:
        """What must match for a rerun to reuse earlier points: the train arguments without --device (a resumed
        sweep may run on another device)."""
        return without_option([*self.train_args, *(["-o", self.override] if self.override else [])], None,
                              "--device")


def parse_sweep_args(argv: Sequence[str]) -> SweepArgs:
    """Check the run_downstream arguments given to a sweep: a `-m train` with `-p`, no `-e`/`-a`, a downstream whose
    log.log the sweep reads, and no `-o` of the learning rate itself."""
    argv = list(argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise AsitError("--lr-sweep: give s3prl's -m train arguments after --, with -p EXPDIR")
    opts, _ = _probe().parse_known_args(argv)
    if opts.mode not in (None, "train"):
        raise AsitError(f"--lr-sweep trains and evaluates every point itself: give the -m train arguments, not "
                        f"-m {opts.mode}")
    if opts.past_exp:
        raise AsitError("--lr-sweep starts every point from the upstream: -e (resume a checkpoint) is not "
                        "supported; a rerun of the same sweep command resumes it")
    if opts.auto_resume:
        raise AsitError("--lr-sweep resumes by itself (rerun the same command): drop -a")
    if not opts.expdir:
        raise AsitError("--lr-sweep needs -p EXPDIR: the points go to EXPDIR/lr_<rate> and the record to "
                        f"EXPDIR/{SWEEP_FILE}")
    if opts.downstream not in TASKS:
        raise AsitError(f"--lr-sweep reads the dev/test accuracy that s3prl's {' and '.join(TASKS)} downstreams "
                        f"write to log.log; -d {opts.downstream} is not one of them")
    override = opts.override if opts.override and opts.override.lower() != "none" else None
    if override and any(part.split("=")[0].strip() == LR_KEY for part in override.split(",,")):
        raise AsitError(f"-o sets {LR_KEY}, which --lr-sweep sets for every point; remove it from -o")
    train = without_option(without_option(argv, "-p", "--expdir"), "-o", "--override")
    if opts.mode is None:
        train = ["-m", "train", *train]
    return SweepArgs(Path(opts.expdir), train, override, opts.device, opts.downstream)


# ------------------------------------------------------------------------------------------ points


@dataclass
class SweepPoint:
    lr: float
    expdir: str                     # folder name, relative to the sweep folder
    trained: bool = False
    evaluated: bool = False
    dev: float | None = None        # best dev accuracy logged in training
    dev_step: int | None = None     # the first step that reached it (s3prl saves dev-best.ckpt there)
    test: float | None = None       # `-m evaluate` of `checkpoint`
    checkpoint: str | None = None
    note: str | None = None

    @classmethod
    def new(cls, lr: float) -> "SweepPoint":
        return cls(lr=lr, expdir=f"lr_{lr_label(lr)}")


def best_dev(folder: Path) -> tuple[float | None, int | None]:
    """The best finite dev value in `folder/log.log` and the first step reaching it (None, None: no dev line)."""
    try:
        records = read_log(folder)
    except AsitError:
        return None, None
    devs = [r for r in records if r.split == "dev" and math.isfinite(r.value)]
    if not devs:
        return None, None
    best = max(r.value for r in devs)
    return best, next(r.step for r in devs if r.value == best)


def evaluated_test(folder: Path) -> float | None:
    """The value `-m evaluate` logged (`test at step 0`, the last one when evaluated more than once)."""
    try:
        found = [r.value for r in read_log(folder) if r.split == "test" and r.step == 0]
    except AsitError:
        return None
    return found[-1] if found else None


def checkpoint_to_evaluate(folder: Path) -> tuple[Path, str | None]:
    """`dev-best.ckpt`, or else the last `states-*.ckpt` with a note saying so (s3prl writes dev-best only when a dev
    evaluation beats the previous best, starting from 0: never when dev is not among `eval_dataloaders`, when no
    evaluation step was reached, or when dev accuracy stayed 0)."""
    best = folder / "dev-best.ckpt"
    if best.is_file():
        return best, None
    states = sorted(folder.glob("states-*.ckpt"), key=lambda p: int(p.stem.split("-")[-1]))
    if not states:
        raise AsitError(f"{folder} holds neither dev-best.ckpt nor a states-*.ckpt to evaluate (is runner.save_step "
                        "larger than total_steps?)")
    return states[-1], (f"no dev-best.ckpt (dev never evaluated above 0): evaluated the last checkpoint "
                        f"{states[-1].name}")


def refresh(point: SweepPoint, folder: Path) -> SweepPoint:
    """The point's dev/test read again from its folder (the logs are the record; the JSON only caches them)."""
    point.dev, point.dev_step = best_dev(folder)
    point.test = evaluated_test(folder)
    point.evaluated = point.test is not None
    if point.evaluated:
        point.trained = True
        if point.checkpoint is None:
            try:
                ckpt, point.note = checkpoint_to_evaluate(folder)
                point.checkpoint = ckpt.name
            except AsitError:
                pass
    return point


def choose(points: Sequence[SweepPoint]) -> SweepPoint | None:
    """The evaluated point with the best dev value; ties go to the smaller rate (None: no point has a dev value)."""
    candidates = [p for p in points if p.evaluated and p.dev is not None and math.isfinite(p.dev)]
    return min(candidates, key=lambda p: (-p.dev, p.lr)) if candidates else None  # type: ignore[operator]


# ------------------------------------------------------------------------------------------ the record


def read_sweep(folder: str | Path) -> dict[str, Any]:
    """`folder/lr_sweep.json`, checked to be a sweep record."""
    path = Path(folder) / SWEEP_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AsitError(f"{path} does not exist (not an `asit s3prl --lr-sweep` folder)") from None
    except (OSError, ValueError) as exc:
        raise AsitError(f"{path} cannot be read as a sweep record ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list) or "chosen" not in data:
        raise AsitError(f"{path} is not an `asit s3prl --lr-sweep` record (no points/chosen)")
    return data


def chosen_point(folder: str | Path) -> dict[str, Any]:
    """The chosen point of a finished sweep (its `expdir` is relative to `folder`); one-line errors otherwise."""
    sweep = read_sweep(folder)
    path = Path(folder) / SWEEP_FILE
    pending = [lr_label(p["lr"]) for p in sweep["points"] if not p.get("evaluated")]
    if pending:
        raise AsitError(f"{path}: the sweep is not finished (not evaluated: {', '.join(pending)}); rerun the same "
                        "`asit s3prl --lr-sweep` command")
    chosen = next((p for p in sweep["points"] if sweep["chosen"] is not None and p["lr"] == sweep["chosen"]), None)
    if chosen is None:
        raise AsitError(f"{path}: no point was chosen (no point logged a dev {sweep.get('metric', METRIC)}; is dev "
                        "in the config's runner.eval_dataloaders?)")
    return chosen


def _record(args: SweepArgs, points: Sequence[SweepPoint], chosen: SweepPoint | None) -> dict[str, Any]:
    return {"sweep_version": SWEEP_VERSION, "metric": METRIC, "selected_on": "dev", "downstream": args.downstream,
            "train_args": args.identity(), "grid": [p.lr for p in points],
            "points": [asdict(p) for p in points], "chosen": chosen.lr if chosen else None,
            "complete": all(p.evaluated for p in points)}


def _save(args: SweepArgs, points: Sequence[SweepPoint], chosen: SweepPoint | None = None) -> None:
    atomic_write_text(args.expdir / SWEEP_FILE, json.dumps(_record(args, points, chosen), indent=2) + "\n")


def _earlier_points(args: SweepArgs) -> dict[str, SweepPoint]:
    """Points of an earlier run of this sweep (same train arguments), by folder name."""
    if not (args.expdir / SWEEP_FILE).exists():
        return {}
    earlier = read_sweep(args.expdir)
    if earlier.get("train_args") != args.identity():
        raise AsitError(f"{args.expdir / SWEEP_FILE} was written by a sweep with other train arguments "
                        f"({' '.join(map(str, earlier.get('train_args') or []))}); give this sweep another -p")
    fields = set(SweepPoint.__dataclass_fields__)
    return {p["expdir"]: SweepPoint(**{k: v for k, v in p.items() if k in fields}) for p in earlier["points"]}


def format_table(points: Sequence[SweepPoint], chosen: SweepPoint | None) -> str:
    """The sweep as a small text table; `*` marks the chosen point."""
    def cell(value: float | int | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"  {'lr':<10} {'dev ' + METRIC:>13} {'at step':>8} {'test ' + METRIC:>14}  checkpoint"]
    for p in points:
        mark = "*" if chosen is not None and p.lr == chosen.lr else " "
        lines.append(f"{mark} {lr_label(p.lr):<10} {cell(p.dev, '.4f'):>13} {cell(p.dev_step, 'd'):>8} "
                     f"{cell(p.test, '.4f'):>14}  {p.checkpoint or '-'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ running


def run_sweep(args: SweepArgs, grid: Sequence[float], cache_dir: Path, runner: Runner,
              prepare: Callable[[Sequence[str]], list[str]]) -> dict[str, Any]:
    """Train and evaluate every point not yet evaluated (see the module docstring); returns the record written to
    `EXPDIR/lr_sweep.json`. `runner` runs s3prl's run_downstream with the argv `prepare` checked."""
    args.expdir.mkdir(parents=True, exist_ok=True)
    known = _earlier_points(args)
    wanted = {SweepPoint.new(lr).expdir: SweepPoint.new(lr) for lr in grid}
    by_folder = {name: refresh(point, args.expdir / name) for name, point in known.items()}
    by_folder = {name: point for name, point in by_folder.items() if point.evaluated or name in wanted}
    for name, point in wanted.items():
        by_folder.setdefault(name, point)
    points = sorted(by_folder.values(), key=lambda p: p.lr)
    for point in points:
        folder = args.expdir / point.expdir
        if point.evaluated:
            print(f"asit s3prl: lr {lr_label(point.lr)}: already evaluated in {folder}, not rerun")
            continue
        if not point.trained:
            argv = args.point_argv(folder, point.lr)
            if any(folder.glob("states-*.ckpt")):
                print(f"asit s3prl: lr {lr_label(point.lr)}: resuming the stopped training in {folder} (-a)")
                argv.append("-a")
            else:
                print(f"asit s3prl: lr {lr_label(point.lr)}: training in {folder}")
            runner(prepare(argv), cache_dir)
            _release()
            point.trained = True
            _save(args, points)
        ckpt, point.note = checkpoint_to_evaluate(folder)
        point.checkpoint = ckpt.name
        if point.note:
            print(f"asit s3prl: lr {lr_label(point.lr)}: {point.note}")
        runner(prepare(["-m", "evaluate", "-e", str(ckpt), *(["--device", args.device] if args.device else [])]),
               cache_dir)
        _release()
        refresh(point, folder)
        if not point.evaluated:
            raise AsitError(f"{folder / 'log.log'} has no `test at step 0` line after -m evaluate of {ckpt}")
        _save(args, points)
    chosen = choose(points)
    _save(args, points, chosen)
    print(f"asit s3prl: learning-rate sweep in {args.expdir} (chosen on dev, ties to the smaller rate; "
          f"record: {args.expdir / SWEEP_FILE})")
    print(format_table(points, chosen))
    if chosen is None:
        raise AsitError(f"no point of the sweep in {args.expdir} logged a dev {METRIC}, so none was chosen (is dev "
                        "in the config's runner.eval_dataloaders?)")
    return _record(args, points, chosen)


def _release() -> None:
    """Free the finished run's models before the next point (s3prl's runner keeps no global reference to them)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


__all__ = ["LR_KEY", "METRIC", "SWEEP_FILE", "SweepArgs", "SweepPoint", "add_arguments", "best_dev",
           "checkpoint_to_evaluate", "choose", "chosen_point", "format_table", "lr_grid", "lr_label",
           "parse_sweep_args", "read_sweep", "run_sweep", "without_option"]
