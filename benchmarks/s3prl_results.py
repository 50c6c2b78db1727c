"""s3prl results into the store: what `run_downstream.py` wrote in an experiment folder, as protocol-tagged rows.

An s3prl expdir (`-p`) holds `args_<time>.yaml` and `config_<time>.yaml` per invocation (train, then evaluate) and
`log.log`, where its speech_commands / voxceleb1 downstreams append `test at step 0: <accuracy>` when
`-m evaluate` runs (upstream/s3prl_upstream/results.py reads it). One row per expdir: task and protocol from the
downstream (`speech_commands` = SUPERB KS on Speech Commands v0.01, `voxceleb1` = SID on iden_split, the protocols
our own finetune/probe cells use), mode `s3prl-frozen` or `s3prl-finetune` from the training run's
`upstream_trainable` (`-f`), seed from its `--seed`, s3prl's own number (nothing is recomputed), and the digest of
s3prl's resolved training config plus the upstream and feature selection as the recipe digest (other settings,
another row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from tasks.api import EncoderSpec, TaskCell, TaskResult
from tasks.task_data import PROTOCOLS
from upstream.errors import AsitError
from upstream.s3prl_upstream.results import last_value

from .results import ResultsStore, cell_key, checkpoint_identity, make_row, settings_digest

# s3prl downstream -> our task (its protocol is PROTOCOLS[task])
DOWNSTREAM_TASKS = {"speech_commands": "speechcommands_v1", "voxceleb1": "voxceleb1"}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AsitError(f"{path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise AsitError(f"{path} is not s3prl's args/config format")
    return data


def _time_tag(path: Path) -> str:
    return path.stem.split("_", 1)[1]


def training_run(expdir: Path) -> tuple[dict[str, Any], Path]:
    """(args, config file) of the first `-m train` invocation in `expdir`.

    s3prl names both files by a time tag that it reads twice (`args_<t1>.yaml`, then `config_<t2>.yaml`), so the two
    tags differ when the writes straddle a second: a run's config is the first one at or after its args and before
    the next invocation's args.
    """
    args_files = sorted(expdir.glob("args_*.yaml"), key=_time_tag)
    configs = sorted(expdir.glob("config_*.yaml"), key=_time_tag)
    for index, args_file in enumerate(args_files):
        args = _read_yaml(args_file)
        if args.get("mode") == "train":
            start = _time_tag(args_file)
            end = _time_tag(args_files[index + 1]) if index + 1 < len(args_files) else None
            config = next((c for c in configs if start <= _time_tag(c) and (end is None or _time_tag(c) < end)),
                          None)
            if config is None:
                raise AsitError(f"{expdir}: {args_file.name} has no matching config_{start}.yaml (nor a later one "
                                "before the next run)")
            return args, config
    raise AsitError(f"{expdir} holds no s3prl training run (args_*.yaml with mode: train); is it a -p folder of "
                    "`asit s3prl -- -m train`?")


def s3prl_cell(expdir: str | Path, encoder: EncoderSpec) -> tuple[TaskCell, TaskResult, str]:
    """(cell, result, recipe digest) of one evaluated s3prl experiment folder."""
    expdir = Path(expdir)
    if not expdir.is_dir():
        raise AsitError(f"s3prl experiment folder {expdir} does not exist")
    args, config = training_run(expdir)
    downstream = str(args.get("downstream"))
    if downstream not in DOWNSTREAM_TASKS:
        raise AsitError(f"{expdir}: downstream {downstream!r} is not one of ours "
                        f"({', '.join(DOWNSTREAM_TASKS)})")
    try:
        value = last_value(expdir, "test", step=0)
    except AsitError:
        raise AsitError(f"{expdir}: no test result from `-m evaluate` in log.log; run "
                        f"`asit s3prl -- -m evaluate -e {expdir}/dev-best.ckpt` (or a states-N.ckpt) first") from None
    task = DOWNSTREAM_TASKS[downstream]
    trainable = bool(args.get("upstream_trainable"))
    selection = str(args.get("upstream_feature_selection") or "hidden_states")
    steps = (_read_yaml(config).get("runner") or {}).get("total_steps")
    cell = TaskCell(encoder=encoder, task=task, mode="s3prl-finetune" if trainable else "s3prl-frozen",
                    protocol=PROTOCOLS[task], seed=int(args.get("seed", 1337)), fold=None, data_root=str(expdir),
                    recipe="s3prl.run_downstream",
                    overrides={"downstream": downstream, "upstream": args.get("upstream"),
                               "upstream_feature_selection": selection, "total_steps": steps})
    extra = {"expdir": str(expdir), "upstream_ckpt": args.get("upstream_ckpt"), "s3prl_config": str(config),
             "dev_accuracy": _optional(expdir, "dev"), "feature_selection": selection, "total_steps": steps}
    digest = settings_digest(cell.overrides, config.read_bytes())    # -s / -u are arguments, not config
    return cell, TaskResult("accuracy", value, extra), digest


def _optional(expdir: Path, split: str) -> float | None:
    try:
        return last_value(expdir, split)
    except AsitError:
        return None


def s3prl_rows(expdirs: Sequence[str | Path], encoder: EncoderSpec, *, pretraining: str = "") -> list[dict[str, Any]]:
    """Store rows of evaluated s3prl experiment folders, every folder checked before any row is returned;
    `encoder.path` is the upstream checkpoint (its weights + config identity, upstream.identity, goes into each row as
    `checkpoint_sha256`)."""
    sha = checkpoint_identity(encoder.path)
    return [make_row(cell, cell_key(cell, sha, digest), sha, result=result, suite="s3prl", pretraining=pretraining,
                     recipe_digest=digest)
            for cell, result, digest in (s3prl_cell(expdir, encoder) for expdir in expdirs)]


def ingest_s3prl_runs(expdirs: Sequence[str | Path], encoder: EncoderSpec, store: ResultsStore, *,
                      pretraining: str = "") -> tuple[int, int]:
    """Add `s3prl_rows` to `store`. Returns (rows added, rows already present)."""
    return store.append_all(s3prl_rows(expdirs, encoder, pretraining=pretraining))


__all__ = ["DOWNSTREAM_TASKS", "ingest_s3prl_runs", "s3prl_cell", "s3prl_rows", "training_run"]
