"""Suites: a grid of encoders × tasks × modes × seeds (× folds), run cell by cell into a results store, resumably.

A suite is a YAML file (benchmarks/suites/*.yaml, see docs/benchmarks.md)::

    name: demo_cpu
    vars: {demo: demo_out}                      # "{demo}" in paths below; --set vars.demo=/elsewhere
    encoders:
      asit-tiny-demo: {path: "{demo}/pretrain/encoder.pt", pretraining: embedded corpus}
      scratch-tiny-demo: {path: "{demo}/pretrain/encoder.pt", init: scratch}
    data: {esc50: "{demo}/corpus/ESC-50-master", ...}   # "???" = must be set with --set data.esc50=PATH
    tasks: {esc50: {}, voxceleb1: {overrides: {finetune: {epochs: 3}}}}
    modes: [probe, finetune]
    seeds: [1, 2]
    overrides: {finetune: {epochs: 2}}          # recipe overrides per mode, for every task

A suite may also pretrain the encoders it measures (`pretrain:`, benchmarks/suite_pretrain.py): an encoder then
names its run (`pretrained: asit`) instead of a path, and the cells of seed s measure that run's seed-s encoder.

Every cell has a key (benchmarks.results.cell_key); a cell whose key has a successful row in the store is skipped,
so rerunning a crashed or interrupted suite runs only what is missing. A cell that raises is recorded as failed
with its error, the suite goes on, and the next run retries it.
"""

from __future__ import annotations

import importlib
import itertools
import math
import string
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from tasks.api import MODES, TASKS, EncoderSpec, TaskCell, TaskResult, canonical_json
from tasks.task_data import PROTOCOLS
from upstream.config import deep_merge, load_yaml, parse_overrides
from upstream.errors import AsitError
from upstream.floors import INITS

from .parallel_config import ParallelConfig, parse_parallel
from .results import STATUS_OK, ResultsStore, cell_key, make_row, spec_identity
from .suite_pretrain import NAME, PretrainRun, encoder_path, parse_pretrain, pretrain_runs

SUITES_DIR = Path(__file__).parent / "suites"
DEFAULT_RUNNER = "tasks.run:run_task"
UNSET = "???"

# The protocol each task is evaluated under (the task runner's, tasks.task_data.PROTOCOLS) and the held-out folds
# it is run for (None: one cell on the official splits). ESC-50 is 5-fold cross-validation (train on 4 folds, test
# on the 5th) in both modes, so probe and finetune numbers average the same folds.
TASK_FOLDS: dict[str, tuple[int, ...] | None] = {"esc50": (1, 2, 3, 4, 5)}
TASK_PROTOCOLS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    task: (PROTOCOLS[task], TASK_FOLDS.get(task)) for task in TASKS}

Runner = Callable[[TaskCell, Path], TaskResult]
FLOOR_PRETRAINING = {"scratch": "none (scratch)", "fbank_stats": "none (fbank statistics floor)"}


# ----------------------------------------------------------------------------------------------------- the spec

@dataclass(frozen=True)
class SuiteEncoder:
    spec: EncoderSpec                # its path is a placeholder when `pretrained` names a run
    pretraining: str = ""            # what it was pretrained on, for the leaderboard ("" = unknown)
    pretrained: str = ""             # the suite's pretraining run whose seed-s encoder the seed-s cells measure


@dataclass(frozen=True)
class SuiteTask:
    task: str
    data_root: str
    protocol: str
    folds: tuple[int | None, ...]
    recipes: dict[str, str] = field(default_factory=dict)                # mode -> recipe name or YAML path
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)   # mode -> recipe overrides


@dataclass(frozen=True)
class Suite:
    name: str
    source: str                      # the YAML file (for messages)
    encoders: tuple[SuiteEncoder, ...]
    tasks: tuple[SuiteTask, ...]
    modes: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: dict[str, dict[str, Any]]                                  # mode -> recipe overrides (all tasks)
    results: Path
    work_dir: Path
    runner: str = DEFAULT_RUNNER
    pretrain: tuple[PretrainRun, ...] = ()                                # runs this suite trains itself
    parallel: ParallelConfig = field(default_factory=ParallelConfig)      # how the cells are spread

    def encoder_for(self, encoder: SuiteEncoder, seed: int) -> EncoderSpec:
        """The encoder the cells of `seed` measure: its own file, or its pretraining run's seed-`seed` export."""
        if not encoder.pretrained:
            return encoder.spec
        return EncoderSpec(encoder.spec.name, str(encoder_path(self.work_dir, encoder.pretrained, seed)),
                           encoder.spec.init)


@dataclass(frozen=True)
class PlannedCell:
    cell: TaskCell
    key: str
    checkpoint_sha256: str
    pretraining: str = ""
    recipe_digest: str = ""
    pretrain_run: str = ""           # the suite's pretraining run whose seed-s encoder this cell measures

    @property
    def label(self) -> str:
        fold = f" fold {self.cell.fold}" if self.cell.fold is not None else ""
        return f"{self.cell.encoder.name} {self.cell.task} {self.cell.mode} seed {self.cell.seed}{fold}"

    def row(self, *, suite: str, duration_s: float = 0.0, **outcome: Any) -> dict[str, Any]:
        """This cell's store row, from its `result=` or its `error=` (results.make_row)."""
        return make_row(self.cell, self.key, self.checkpoint_sha256, **outcome, duration_s=duration_s, suite=suite,
                        pretraining=self.pretraining, recipe_digest=self.recipe_digest, pretrain_run=self.pretrain_run)

    def work_dir(self, root: Path) -> Path:
        """One folder per cell (the key's prefix keeps cells with other overrides apart)."""
        fold = f"-fold{self.cell.fold}" if self.cell.fold is not None else ""
        leaf = f"seed{self.cell.seed}{fold}-{self.key[:8]}"
        return Path(root) / self.cell.encoder.name / self.cell.task / self.cell.mode / leaf


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A YAML file, or the name of a suite shipped in benchmarks/suites/ (without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SUITES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    available = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
    raise AsitError(f"suite {str(name_or_path)!r} is neither a file nor a shipped suite ({available})")


def load_suite(name_or_path: str | Path, sets: Sequence[str] = (), *, results: str | Path | None = None,
               work_dir: str | Path | None = None) -> Suite:
    """Read a suite file and apply `key=value` overrides (`data.esc50=/data/ESC-50-master`, `seeds=[0,1,2]`)."""
    path = resolve_suite_path(name_or_path)
    raw = deep_merge(read_suite_file(path), parse_overrides(list(sets)))
    return parse_suite(raw, str(path), results=results, work_dir=work_dir)


def read_suite_file(path: Path) -> dict[str, Any]:
    """The suite file's mapping (one line naming the file when it is not UTF-8 YAML text holding one)."""
    return load_yaml(path, "suite file")


def parse_suite(raw: Mapping[str, Any], source: str = "<suite>", *, results: str | Path | None = None,
                work_dir: str | Path | None = None) -> Suite:
    known = {"name", "vars", "encoders", "data", "tasks", "modes", "seeds", "overrides", "results", "work_dir",
             "runner", "pretrain", "parallel"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise AsitError(f"suite {source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    name = str(raw.get("name") or Path(source).stem)
    variables = {str(k): str(v) for k, v in _mapping(raw.get("vars"), "vars", source).items()}
    variables.setdefault("name", name)

    def fill(value: Any, where: str) -> str:
        text = str(value)
        try:
            text = text.format_map(variables)
        except (KeyError, IndexError, ValueError) as exc:
            raise AsitError(f"suite {source}: {where} = {value!r} uses an unknown or malformed variable ({exc}); "
                            f"variables: {', '.join(sorted(variables))}") from None
        if UNSET in text:
            unset_vars = [f"vars.{v}" for v in _referenced(str(value)) if UNSET in variables.get(v, "")]
            hint = " and ".join(f"--set {k}=..." for k in unset_vars or [where])
            raise AsitError(f"suite {source}: {where} is not set ({text!r}); pass {hint}")
        return text

    def fill_all(value: Any, where: str) -> Any:
        """`fill` on every string inside a mapping or list (other values as they are)."""
        if isinstance(value, Mapping):
            return {k: fill_all(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [fill_all(v, where) for v in value]
        return fill(value, where) if isinstance(value, str) else value

    pretrain = parse_pretrain(raw.get("pretrain"), source, fill_all, lambda value, where: _mapping(value, where,
                                                                                                   source))
    runs = {run.name: run for run in pretrain}
    modes = tuple(str(m) for m in _listing(raw.get("modes", list(MODES)), "modes", source))
    bad_modes = [m for m in modes if m not in MODES]
    if bad_modes or not modes:
        raise AsitError(f"suite {source}: modes must be a non-empty list of {', '.join(MODES)}, got {list(modes)}")
    seeds = tuple(_integer(s, "seeds", source) for s in _listing(raw.get("seeds", [0]), "seeds", source))
    if not seeds or len(set(seeds)) != len(seeds):
        raise AsitError(f"suite {source}: seeds must be a non-empty list of distinct integers, got {list(seeds)}")

    encoders = []
    for enc_name, entry in _mapping(raw.get("encoders"), "encoders", source).items():
        if entry is False:                                   # --set encoders.asit-local=false leaves one out
            continue
        entry = _mapping(entry, f"encoders.{enc_name}", source)
        if not NAME.match(str(enc_name)):
            raise AsitError(f"suite {source}: encoder name {enc_name!r} must be letters, digits, '_', '.', '+', '-'")
        if "module" in entry:
            encoders.append(_module_encoder(str(enc_name), entry, modes, source, fill, fill_all))
            continue
        extra = sorted(set(entry) - {"path", "pretrained", "init", "pretraining"})
        if extra:
            raise AsitError(f"suite {source}: encoders.{enc_name} has unknown key(s) {', '.join(extra)} "
                            "(valid: path or pretrained, init, pretraining; or module, model, options, pretraining "
                            "for a HEAR module)")
        init = str(entry.get("init", "pretrained"))
        if init not in INITS:
            raise AsitError(f"suite {source}: encoders.{enc_name}.init must be one of {', '.join(INITS)}, got {init!r}")
        if ("path" in entry) == ("pretrained" in entry):
            raise AsitError(f"suite {source}: encoders.{enc_name} needs either a path or `pretrained: RUN` (a run "
                            "of the suite's pretrain section)")
        run = str(entry.get("pretrained", ""))
        if run and run not in runs:
            raise AsitError(f"suite {source}: encoders.{enc_name}.pretrained {run!r} is not a run of the pretrain "
                            f"section (runs: {', '.join(runs) or 'none'})")
        default_text = (runs[run].describe() if run and init == "pretrained" else FLOOR_PRETRAINING.get(init, ""))
        pretraining = fill(entry.get("pretraining", default_text), f"encoders.{enc_name}.pretraining")
        path = fill(entry["path"], f"encoders.{enc_name}.path") if not run else f"<pretrain run {run}>"
        encoders.append(SuiteEncoder(EncoderSpec(str(enc_name), path, init), pretraining, run))
    if not encoders:
        raise AsitError(f"suite {source}: no encoders")

    data = _mapping(raw.get("data"), "data", source)
    mode_overrides = _mode_overrides(raw.get("overrides"), "overrides", source)
    tasks = []
    for task, entry in _mapping(raw.get("tasks"), "tasks", source).items():
        if task not in TASKS:
            raise AsitError(f"suite {source}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        if entry is False:                                   # --set tasks.as20k=false leaves a task out
            continue
        entry = _mapping(entry, f"tasks.{task}", source)
        extra = sorted(set(entry) - {"folds", "recipes", "overrides"})
        if extra:
            raise AsitError(f"suite {source}: tasks.{task} has unknown key(s) {', '.join(extra)} "
                            "(valid: folds, recipes, overrides)")
        protocol, default_folds = TASK_PROTOCOLS[task]
        folds_raw = entry.get("folds", default_folds)
        folds: tuple[int | None, ...] = (None,) if folds_raw is None else tuple(
            _integer(f, f"tasks.{task}.folds", source) for f in _listing(folds_raw, f"tasks.{task}.folds", source))
        if not folds:
            raise AsitError(f"suite {source}: tasks.{task}.folds is empty")
        if task not in data:
            raise AsitError(f"suite {source}: no data root for task {task}; pass --set data.{task}=PATH")
        tasks.append(SuiteTask(task=task, data_root=fill(data[task], f"data.{task}"),
                               protocol=protocol, folds=folds,
                               recipes={mode: fill(name, f"tasks.{task}.recipes.{mode}") for mode, name in
                                        _mode_keyed(entry.get("recipes"), f"tasks.{task}.recipes", source).items()},
                               overrides=_mode_overrides(entry.get("overrides"), f"tasks.{task}.overrides", source)))
    if not tasks:
        raise AsitError(f"suite {source}: no tasks")

    return Suite(name=name, source=source, encoders=tuple(encoders), tasks=tuple(tasks), modes=modes, seeds=seeds,
                 overrides=mode_overrides,
                 results=Path(results) if results is not None else Path(
                     fill(raw.get("results", "results/{name}.jsonl"), "results")),
                 work_dir=Path(work_dir) if work_dir is not None else Path(
                     fill(raw.get("work_dir", "runs/bench/{name}"), "work_dir")),
                 runner=str(raw.get("runner") or DEFAULT_RUNNER), pretrain=pretrain,
                 parallel=parse_parallel(raw.get("parallel"), f"suite {source}"))


MODULE_KEYS = ("module", "model", "options", "pretraining")


def _module_encoder(name: str, entry: Mapping[str, Any], modes: Sequence[str], source: str,
                    fill: Callable[[Any, str], str], fill_all: Callable[[Any, str], Any]) -> SuiteEncoder:
    """An `encoders:` entry naming an installed HEAR 2021 module (`module`, optional `model` file and `options`,
    load_model's keywords): probe cells only, since a foreign module has no random-init twin and is not finetuned."""
    where = f"suite {source}: encoders.{name}"
    extra = sorted(set(entry) - set(MODULE_KEYS))
    if extra:
        why = (" (a HEAR module is always the pretrained model its authors ship: no random-init twin)"
               if "init" in extra else "")
        raise AsitError(f"{where} names a HEAR module; unknown key(s) {', '.join(extra)}{why} (valid: "
                        f"{', '.join(MODULE_KEYS)})")
    module = fill(entry["module"], f"encoders.{name}.module").strip()
    if not module:
        raise AsitError(f"{where}.module is empty: give the HEAR module's import name (e.g. hearbaseline.wav2vec2)")
    if any(mode != "probe" for mode in modes):
        raise AsitError(f"{where} is the HEAR module {module}: it is evaluated by probe cells only (finetuning a "
                        f"foreign module is not supported), and this suite's modes are {', '.join(modes)}; set "
                        "`modes: [probe]` or put the module in a probe-only suite")
    options = fill_all(entry.get("options") or {}, f"encoders.{name}.options")
    if not isinstance(options, Mapping):
        raise AsitError(f"{where}.options must be a mapping of load_model keywords, got {options!r}")
    model = fill(entry["model"], f"encoders.{name}.model") if entry.get("model") else ""
    pretraining = fill(entry.get("pretraining", ""), f"encoders.{name}.pretraining")
    return SuiteEncoder(EncoderSpec(name, model, module=module, options=options), pretraining)


def encoder_identity_key(spec: EncoderSpec) -> tuple[str, str, str]:
    """What planning hashes an encoder once per: its file, plus the module and options of a HEAR module."""
    return spec.path, spec.module, canonical_json(dict(spec.options)) if spec.module else ""


def _referenced(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError:
        return []


def _mapping(value: Any, where: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AsitError(f"suite {source}: {where} must be a mapping, got {value!r}")
    return dict(value)


def _listing(value: Any, where: str, source: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    raise AsitError(f"suite {source}: {where} must be a list, got {value!r}")


def _integer(value: Any, where: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AsitError(f"suite {source}: {where} must hold integers, got {value!r}")
    return value


def _mode_keyed(value: Any, where: str, source: str) -> dict[str, Any]:
    out = _mapping(value, where, source)
    bad = [mode for mode in out if mode not in MODES]
    if bad:
        raise AsitError(f"suite {source}: {where} keys are modes ({', '.join(MODES)}), got {bad[0]!r}")
    return out


def _mode_overrides(value: Any, where: str, source: str) -> dict[str, dict[str, Any]]:
    return {mode: _mapping(overrides, f"{where}.{mode}", source)
            for mode, overrides in _mode_keyed(value, where, source).items()}


# ----------------------------------------------------------------------------------------------------- planning

def plan_suite(suite: Suite, *, check_data: bool = True) -> list[PlannedCell]:
    """Every cell of the grid, in run order (mode, task, encoder, seed, fold). Hashes each checkpoint once and
    checks every data root before anything runs, so a typo fails in a second rather than after an hour."""
    if check_data:
        missing = [f"data.{t.task}={t.data_root}" for t in suite.tasks if not Path(t.data_root).exists()]
        if missing:
            raise AsitError(f"suite {suite.source}: data root(s) not found: {'; '.join(missing)}")
    hashes = {}
    for encoder, seed in itertools.product(suite.encoders, suite.seeds):
        spec = suite.encoder_for(encoder, seed)
        path, identity_key = spec.path, encoder_identity_key(spec)
        if identity_key in hashes:
            continue
        if encoder.pretrained and not Path(path).is_file():
            raise AsitError(f"suite {suite.source}: encoders.{encoder.spec.name}: pretraining run "
                            f"{encoder.pretrained} seed {seed} has not finished ({path}); `asit bench` trains it "
                            "before planning the cells")
        try:
            hashes[identity_key] = spec_identity(spec)
        except AsitError as exc:
            field_name = "model: HEAR module model file" if spec.module else "path: checkpoint"
            raise AsitError(f"suite {suite.source}: encoders.{encoder.spec.name}.{field_name} {exc}") from None
    cells = []
    for mode, task in itertools.product(suite.modes, suite.tasks):
        overrides = deep_merge(suite.overrides.get(mode, {}), task.overrides.get(mode, {}))
        digest = resolved_recipe_digest(suite, task, mode, overrides)
        for encoder, seed, fold in itertools.product(suite.encoders, suite.seeds, task.folds):
            spec = suite.encoder_for(encoder, seed)
            cell = TaskCell(encoder=spec, task=task.task, mode=mode, protocol=task.protocol, seed=seed,
                            fold=fold, data_root=task.data_root, recipe=task.recipes.get(mode, ""),
                            overrides=overrides)
            sha = hashes[encoder_identity_key(spec)]
            cells.append(PlannedCell(cell, cell_key(cell, sha, digest), sha, encoder.pretraining, digest,
                                     encoder.pretrained))
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        dupes = sorted({c.label for c in cells if keys.count(c.key) > 1})
        raise AsitError(f"suite {suite.source}: the grid repeats cells (a fold listed twice?): {'; '.join(dupes[:3])}")
    return cells


def resolved_recipe_digest(suite: Suite, task: SuiteTask, mode: str, overrides: Mapping[str, Any]) -> str:
    """Digest of the recipe a cell will run (its file + overrides); loading it also rejects a bad override before
    any cell runs, with the suite and task named."""
    from tasks.recipes import load_recipe, recipe_digest

    try:
        return recipe_digest(load_recipe(task.task, mode, task.recipes.get(mode, ""), overrides))
    except AsitError as exc:
        raise AsitError(f"suite {suite.source}: {task.task} {mode}: {exc}") from None


# ------------------------------------------------------------------------------------------------------ running

@dataclass
class SuiteReport:
    suite: str
    store: Path
    planned: int
    skipped: int                                      # already in the store before this run
    succeeded: list[str] = field(default_factory=list)
    # ran here, but the store refused the row: another run (a second `asit bench` on the same store) finished the
    # cell first, between this run's check and its append; its row is the one kept
    already_in_store: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (cell label, error's first line)
    summary: pd.DataFrame | None = None
    keys: list[str] = field(default_factory=list)    # every planned cell's key (this suite's rows in the store)

    @property
    def complete(self) -> bool:
        return not self.failed


def resolve_runner(spec: str) -> Runner:
    """`module:function` → the function (imported only now, so `asit table` never imports the task stack)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AsitError(f"runner {spec!r} must be of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AsitError(f"runner {spec}: cannot import {module_name} ({exc})") from None
    runner = getattr(module, attribute, None)
    if not callable(runner):
        raise AsitError(f"runner {spec}: {module_name} has no function {attribute}")
    return runner


def run_suite(suite: Suite, *, runner: Runner | None = None, store: ResultsStore | None = None,
              progress: bool = True, log: Callable[[str], None] = print) -> SuiteReport:
    """Run every cell of `suite` whose key has no successful row in the store, appending one row per cell and
    printing one status line per finished cell; serially here, or spread as `suite.parallel` says
    (benchmarks/parallel.py), this process remaining the store's only writer."""
    store = store or ResultsStore(suite.results)
    pretrain_runs(suite.pretrain, suite.seeds, suite.work_dir, suite=suite.name, log=log)
    cells = plan_suite(suite)
    runner = runner or resolve_runner(suite.runner)
    finished = store.finished_keys()
    todo = [c for c in cells if c.key not in finished]
    report = SuiteReport(suite.name, store.path, planned=len(cells), skipped=len(cells) - len(todo),
                         keys=[c.key for c in cells])
    parallel = suite.parallel
    how = "" if parallel.backend == "serial" else f" ({parallel.backend}, {parallel.slots} at a time)"
    log(f"suite {suite.name}: {len(cells)} cells, {report.skipped} already in {store.path}, {len(todo)} to run{how}")
    with tqdm(total=len(todo), desc=suite.name, unit="cell", disable=not progress or parallel.backend != "serial",
              dynamic_ncols=True) as bar:
        def record(planned: PlannedCell, row: dict[str, Any]) -> None:
            """The one place rows reach the store: append, count, and one status line."""
            if not store.append(row):                     # a success for a key another run finished meanwhile
                report.already_in_store.append(planned.key)
                state = "dup "
            elif row["status"] == STATUS_OK:
                report.succeeded.append(planned.key)
                state = "ok  "
            else:
                report.failed.append((planned.label, row["error"].splitlines()[0]))
                state = "FAIL"
            done = len(report.succeeded) + len(report.failed) + len(report.already_in_store)
            bar.update(1)
            (bar.write if not bar.disable else log)(f"[{done}/{len(todo)}] {state} {status_line(planned, row)}")

        if parallel.backend == "serial":
            for planned in todo:
                bar.set_postfix_str(planned.label)
                if planned.key in store.finished_keys():      # another process finished it meanwhile
                    report.skipped += 1
                    continue
                record(planned, run_cell(planned, runner, suite.work_dir, suite=suite.name))
        else:
            from .parallel import harvest, run_local, run_submitit, runner_spec

            spec = runner_spec(runner)             # before anything starts: workers import the runner by name
            left = harvest(todo, suite.work_dir, record)
            run = run_local if parallel.backend == "local" else run_submitit
            run(left, parallel, spec, suite.work_dir, suite.name, record)
    report.summary = summarize(store, [c.key for c in cells])
    log(format_report(report))
    return report


def status_line(planned: PlannedCell, row: Mapping[str, Any]) -> str:
    """`label: metric value (seconds)`, or `label: the error's first line`."""
    if row.get("status") == STATUS_OK:
        outcome = f"{row.get('metric')} {float(row.get('value', float('nan'))):.4f}"
    else:
        outcome = str(row["error"]).splitlines()[0] if row.get("error") else "failed"
    return f"{planned.label}: {outcome} ({float(row.get('duration_s') or 0.0):.0f} s)"


def run_cell(planned: PlannedCell, runner: Runner, work_root: Path, *, suite: str = "") -> dict[str, Any]:
    """Run one cell and turn its outcome, whatever it is, into a store row (exceptions become failed rows;
    KeyboardInterrupt and SystemExit propagate so Ctrl-C stops the suite)."""
    work_dir = planned.work_dir(work_root)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        result = runner(planned.cell, work_dir)
        _check_result(result)
    except Exception as exc:  # a failing cell must not take the finished ones with it
        tail = "".join(traceback.format_exception(exc)[-6:])
        error = f"{type(exc).__name__}: {exc}\n{tail}"
        outcome: dict[str, Any] = {"error": error}
    else:
        outcome = {"result": result}
    return planned.row(suite=suite, duration_s=time.monotonic() - started, **outcome)


def _check_result(result: Any) -> None:
    try:
        value = float(result.value)
        good = isinstance(result.metric, str) and bool(result.metric) and math.isfinite(value)
    except (AttributeError, TypeError, ValueError):
        good = False
    if not good:
        raise ValueError(f"runner returned {result!r}; expected a TaskResult with a metric name and a finite value")


def summarize(store: ResultsStore, keys: Sequence[str]) -> pd.DataFrame:
    """Mean ± std over seeds and folds of this suite's cells, per encoder × task × mode."""
    from .table import aggregate

    rows = store.successes()
    rows = rows[rows["key"].isin(set(keys))] if len(rows) else rows
    return aggregate(rows)


def format_report(report: SuiteReport) -> str:
    raced = (f"{len(report.already_in_store)} already in the store (another run finished it first), "
             if report.already_in_store else "")
    lines = [f"suite {report.suite}: {report.planned} cells — {report.skipped} skipped (already done), "
             f"{len(report.succeeded)} ran, {raced}{len(report.failed)} failed; results in {report.store}"]
    if report.summary is not None and len(report.summary):
        shown = report.summary.assign(result=[_mean_std(m, s, n) for m, s, n in zip(
            report.summary["mean"], report.summary["std"], report.summary["n"])])
        shown = shown[["encoder", "task", "mode", "protocol", "metric", "result"]]
        lines.append(shown.to_markdown(index=False))
    for label, error in report.failed:
        lines.append(f"FAILED {label}: {error}")
    if report.failed:
        lines.append("rerun the same command to retry the failed cells (finished ones are kept)")
    return "\n".join(lines)


def _mean_std(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f} ± {std:.1f} (n={n})" if n > 1 else f"{mean:.1f} (n=1)"


__all__ = ["DEFAULT_RUNNER", "PlannedCell", "Suite", "SuiteEncoder", "SuiteReport", "SuiteTask", "TASK_PROTOCOLS",
           "format_report", "load_suite", "parse_suite", "plan_suite", "resolve_runner", "resolve_suite_path",
           "run_cell", "run_suite"]
