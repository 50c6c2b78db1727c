"""Encoders a suite pretrains itself: every objective on the same data and budget (head-to-head suites).

A suite's `pretrain` section::

    pretrain:
      overrides: {data: {source: "{devsets}"}, trainer: {max_epochs: 5}}    # every run: the same data and budget
      runs:
        asit: {config: demo_tiny}
        asit-recon: {config: demo_tiny, overrides: {objective: {loss_weights: {recon: 1.0, local: 0.0, global: 0.0}}}}
    encoders:
      asit: {pretrained: asit}                        # instead of a path
      scratch-vit: {pretrained: asit, init: scratch}  # its floor

Each run is trained once per suite seed (the config's `seed` set to it) into `<work_dir>/_pretrain/<run>/seed<s>/`
before any cell is planned; the cells of seed s measure the encoder of seed s, so the spread over seeds includes the
pretraining's. A run folder keeps the digest of the config it was started with (`suite_pretrain.json`): a finished
run with the same config is reused, an interrupted one resumes from its last checkpoint, and a folder made with
another config, or by something else, is refused rather than measured under this suite's name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from upstream.atomic import atomic_write_text
from upstream.config import deep_merge, load_config_file
from upstream.errors import AsitError

PRETRAIN_FOLDER = "_pretrain"         # under the suite's work_dir; no encoder name can start with "_"
MARKER = "suite_pretrain.json"
ENCODER_FILE = "encoder.pt"
# encoder and run names: each becomes a folder name (and cannot start with "_", so never PRETRAIN_FOLDER)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class PretrainRun:
    name: str
    config: dict[str, Any]            # the resolved config mapping, without run_dir and seed
    objective: str                    # the config's objective name (asit, acm_sskd, wav2vec2, …)

    def describe(self) -> str:
        """The leaderboard's Pretraining text: the objective first, so rows sort by objective."""
        data, trainer = self.config.get("data", {}), self.config.get("trainer", {})
        budget = (f"{trainer['max_steps']} steps" if int(trainer.get("max_steps", -1) or -1) > 0
                  else f"{trainer.get('max_epochs')} epochs")
        return f"{self.objective} ({self.name}), {data.get('source')}, {budget}, batch {data.get('batch_size')}"


Fill = Callable[[Any, str], Any]
MappingCheck = Callable[[Any, str], dict[str, Any]]


def parse_pretrain(raw: Any, source: str, fill: Fill, mapping: MappingCheck) -> tuple[PretrainRun, ...]:
    """The `pretrain` section: each run's config resolved (shipped name or file, `inherit:`, the shared then its own
    overrides) and validated now, so a typo stops the suite before anything trains. `fill(value, where)` substitutes
    the suite's variables into the strings of a value; `mapping(value, where)` checks a value is a mapping."""
    if raw is None:
        return ()
    from upstream.pretrain_config import load_pretrain_config_dict     # the model stack, only for suites that train

    section = mapping(raw, "pretrain")
    unknown = sorted(set(section) - {"overrides", "runs"})
    if unknown:
        raise AsitError(f"suite {source}: pretrain has unknown key(s) {', '.join(unknown)} (valid: overrides, runs)")
    shared = fill(mapping(section.get("overrides"), "pretrain.overrides"), "pretrain.overrides")
    runs = []
    for name, entry in mapping(section.get("runs"), "pretrain.runs").items():
        if entry is False:                               # --set pretrain.runs.asit-local=false leaves a run out
            continue
        where = f"pretrain.runs.{name}"
        if not NAME.match(str(name)):
            raise AsitError(f"suite {source}: {where}: a run name is letters, digits, '_', '.', '+', '-'")
        entry = mapping(entry, where)
        extra = sorted(set(entry) - {"config", "overrides"})
        if extra or "config" not in entry:
            raise AsitError(f"suite {source}: {where} needs `config` and may have `overrides` "
                            f"(got {', '.join(sorted(entry)) or 'nothing'})")
        own = fill(mapping(entry.get("overrides"), f"{where}.overrides"), f"{where}.overrides")
        try:
            config = deep_merge(deep_merge(load_config_file(fill(entry["config"], f"{where}.config"), "pretrain"),
                                           shared), own)
            config.pop("run_dir", None)
            config.pop("seed", None)
            load_pretrain_config_dict(dict(config))          # checked now, before anything trains
        except AsitError as exc:
            raise AsitError(f"suite {source}: {where}: {exc}") from None
        runs.append(PretrainRun(str(name), config, str(config.get("objective", {}).get("name", "asit"))))
    return tuple(runs)


def run_dir(work_dir: Path, run: str, seed: int) -> Path:
    return Path(work_dir) / PRETRAIN_FOLDER / run / f"seed{seed}"


def encoder_path(work_dir: Path, run: str, seed: int) -> Path:
    """The encoder the cells of `seed` measure for pretraining run `run`."""
    return run_dir(work_dir, run, seed) / ENCODER_FILE


def seeded_config(run: PretrainRun, work_dir: Path, seed: int) -> dict[str, Any]:
    return {**run.config, "seed": seed, "run_dir": str(run_dir(work_dir, run.name, seed))}


def config_digest(config: Mapping[str, Any]) -> str:
    """What a run folder is keyed by: its config without the folder itself (moving work_dir keeps the runs)."""
    keyed = {k: v for k, v in config.items() if k != "run_dir"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_run_folder(folder: Path, digest: str, label: str) -> bool:
    """Whether `folder` holds this run's finished encoder (False: it must still train, from its last checkpoint if
    it has one); raises when the folder was made with another config or not by a suite."""
    from upstream.pretrain import earlier_run

    marker = folder / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text()).get("digest")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != digest:
            raise AsitError(f"{label}: {folder} holds a run made with another config (digest {recorded}, now "
                            f"{digest}); delete that folder to retrain it, or pass --work-dir for a new one")
        return (folder / ENCODER_FILE).is_file()
    if earlier_run(folder):
        raise AsitError(f"{label}: {folder} holds a pretraining run this suite did not start; delete it or pass "
                        "--work-dir elsewhere")
    return False


def pretrain_runs(runs: tuple[PretrainRun, ...], seeds: tuple[int, ...], work_dir: Path, *, suite: str,
                  log: Callable[[str], None] = print) -> None:
    """Train every run × seed whose encoder is not there yet (resuming interrupted ones), one after another."""
    from upstream.pretrain import run_pretraining
    from upstream.pretrain_config import load_pretrain_config_dict

    for run in runs:
        for seed in seeds:
            config = seeded_config(run, work_dir, seed)
            folder, digest = Path(config["run_dir"]), config_digest(config)
            label = f"suite {suite}: pretraining {run.name} seed {seed}"
            if check_run_folder(folder, digest, label):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / MARKER, json.dumps({"digest": digest, "run": run.name, "seed": seed,
                                                           "config": config}, indent=2, default=str))
            log(f"{label}: {run.objective} into {folder}")
            run_pretraining(load_pretrain_config_dict(config), resume="auto")


def pending(runs: tuple[PretrainRun, ...], seeds: tuple[int, ...], work_dir: Path) -> list[str]:
    """`run seed s` of every run × seed without its encoder yet (for `asit bench --dry-run`)."""
    return [f"{run.name} seed {seed}" for run in runs for seed in seeds
            if not encoder_path(work_dir, run.name, seed).is_file()]


__all__ = ["NAME", "PretrainRun", "config_digest", "encoder_path", "parse_pretrain", "pending", "pretrain_runs",
           "run_dir"]
