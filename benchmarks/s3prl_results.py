"""s3prl results into the store: what `run_downstream.py` wrote in an experiment folder, as protocol-tagged rows.

An s3prl expdir (`-p`) holds `args_<time>.yaml` and `config_<time>.yaml` per invocation (train, then evaluate) and
`log.log`, where its speech_commands / voxceleb1 downstreams append `test at step 0: <accuracy>` when
`-m evaluate` runs (upstream/s3prl_upstream/results.py reads it). One row per expdir: task and protocol from the
downstream (`speech_commands` = SUPERB KS on Speech Commands v0.01, `voxceleb1` = SID on iden_split, the protocols
our own finetune/probe cells use), mode `s3prl-frozen` or `s3prl-finetune` from the training run's
`upstream_trainable` (`-f`), seed from its `--seed`, s3prl's own number (nothing is recomputed), and the digest of
s3prl's resolved training config plus the upstream and feature selection as the recipe digest (other settings,
another row).

A learning-rate sweep folder (`asit s3prl --lr-sweep`, holding `lr_sweep.json`) is one row: the chosen point's, with
every point in `extra["lr_sweep"]`. Its recipe digest leaves the rate out of the config and adds the grid, so it is
the same whichever point the sweep chose, and differs from a run at one fixed rate.

Every row records what data s3prl read (`extra["data_fingerprint"]`, tasks/fingerprint.py), from the data folders in
the run's config: SID through our VoxCeleb1 reader when s3prl's folders are exactly what that reader reads (then the
digest equals our own cells'), otherwise, and always for KS (s3prl's hash-rule dev split and whole-file `_silence_`
are not our reader's roles), a digest of the file lists s3prl itself builds, which `data_fingerprint_note` says. A
folder that cannot be read gives `None` and a note; it never stops the ingestion.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from tasks.api import EncoderSpec, TaskCell, TaskResult
from tasks.task_data import PROTOCOLS
from upstream.errors import AsitError
from upstream.fingerprint import FingerprintEntry, describe, fingerprint_entries
from upstream.s3prl_upstream.results import last_value
from upstream.s3prl_upstream.sweep import SWEEP_FILE, chosen_point, read_sweep

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


def run_folder(expdir: str | Path) -> Path:
    """The s3prl experiment folder a row is made from: `expdir` itself, or a sweep folder's chosen point."""
    expdir = Path(expdir)
    if (expdir / SWEEP_FILE).is_file():
        return expdir / chosen_point(expdir)["expdir"]
    return expdir


def training_run(expdir: Path) -> tuple[dict[str, Any], Path]:
    """(args, config file) of the first `-m train` invocation in `expdir` (a sweep folder: its chosen point's).

    s3prl names both files by a time tag that it reads twice (`args_<t1>.yaml`, then `config_<t2>.yaml`), so the two
    tags differ when the writes straddle a second: a run's config is the first one at or after its args and before
    the next invocation's args.
    """
    expdir = run_folder(expdir)
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


def s3prl_cell(expdir: str | Path, encoder: EncoderSpec, *, cache_dir: Path | None = None
               ) -> tuple[TaskCell, TaskResult, str]:
    """(cell, result, recipe digest) of one evaluated s3prl experiment folder, or of a finished sweep folder (its
    chosen point); `cache_dir`: the data fingerprint's content-hash cache (default: upstream.fingerprint's)."""
    folder = Path(expdir)
    if not folder.is_dir():
        raise AsitError(f"s3prl experiment folder {folder} does not exist")
    sweep = read_sweep(folder) if (folder / SWEEP_FILE).is_file() else None
    expdir = run_folder(folder)
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
    resolved = _read_yaml(config)
    steps = (resolved.get("runner") or {}).get("total_steps")
    overrides = {"downstream": downstream, "upstream": args.get("upstream"), "upstream_feature_selection": selection,
                 "total_steps": steps}
    if sweep is not None:
        overrides["lr_sweep"] = [point["lr"] for point in sweep["points"]]
    cell = TaskCell(encoder=encoder, task=task, mode="s3prl-finetune" if trainable else "s3prl-frozen",
                    protocol=PROTOCOLS[task], seed=int(args.get("seed", 1337)), fold=None, data_root=str(expdir),
                    recipe="s3prl.run_downstream", overrides=overrides)
    extra = {"expdir": str(expdir), "upstream_ckpt": args.get("upstream_ckpt"), "s3prl_config": str(config),
             "dev_accuracy": _optional(expdir, "dev"), "feature_selection": selection, "total_steps": steps,
             "lr": (resolved.get("optimizer") or {}).get("lr")}
    fingerprint, note = s3prl_data_fingerprint(downstream, resolved, cache_dir)
    extra["data_fingerprint"] = fingerprint
    if note:
        extra["data_fingerprint_note"] = note
    if sweep is None:
        digest = settings_digest(cell.overrides, config.read_bytes())    # -s / -u are arguments, not config
    else:
        chosen = chosen_point(folder)
        extra["dev_accuracy"] = chosen["dev"]                            # the best dev, which chose the point
        extra["lr_sweep"] = {"grid": sweep["points"], "chosen": chosen["lr"], "selected_on": "dev",
                             "folder": str(folder)}
        digest = settings_digest(cell.overrides, _without_lr(resolved))
    return cell, TaskResult("accuracy", value, extra), digest


def _without_lr(config: dict[str, Any]) -> bytes:
    """A sweep point's resolved config minus the one setting the sweep varies, canonically serialised."""
    copy = json.loads(json.dumps(config, default=str))
    if isinstance(copy.get("optimizer"), dict):
        copy["optimizer"].pop("lr", None)
    return json.dumps(copy, sort_keys=True).encode("utf-8")


def _optional(expdir: Path, split: str) -> float | None:
    try:
        return last_value(expdir, split)
    except AsitError:
        return None


def s3prl_rows(expdirs: Sequence[str | Path], encoder: EncoderSpec, *, pretraining: str = "",
               cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Store rows of evaluated s3prl experiment (or sweep) folders, every folder checked before any row is returned;
    `encoder.path` is the upstream checkpoint (its weights + config identity, upstream.identity, goes into each row as
    `checkpoint_sha256`)."""
    sha = checkpoint_identity(encoder.path)
    return [make_row(cell, cell_key(cell, sha, digest), sha, result=result, suite="s3prl", pretraining=pretraining,
                     recipe_digest=digest)
            for cell, result, digest in (s3prl_cell(expdir, encoder, cache_dir=cache_dir) for expdir in expdirs)]


def ingest_s3prl_runs(expdirs: Sequence[str | Path], encoder: EncoderSpec, store: ResultsStore, *,
                      pretraining: str = "", cache_dir: Path | None = None) -> tuple[int, int]:
    """Add `s3prl_rows` to `store`. Returns (rows added, rows already present)."""
    return store.append_all(s3prl_rows(expdirs, encoder, pretraining=pretraining, cache_dir=cache_dir))


# ------------------------------------------------------------------------------------------ data fingerprints

KS_CLASSES = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_")
KS_NOISE = "_background_noise_"
KS_NOTE = ("s3prl's own KS file lists (train/dev by its SHA-1 speaker hash rule, every _background_noise_ file as "
           "_silence_ in both, the test folder): not comparable with our speechcommands_v1 reader's fingerprint, "
           "whose roles differ")


def s3prl_data_fingerprint(downstream: str, config: dict[str, Any], cache_dir: Path | None = None
                           ) -> tuple[dict[str, Any] | None, str | None]:
    """(fingerprint, note) of the data a run's resolved config names; (None, why) when it cannot be computed."""
    datarc = ((config.get("downstream_expert") or {}).get("datarc") or {})
    try:
        if downstream == "voxceleb1":
            return _sid_fingerprint(datarc, cache_dir)
        if downstream == "speech_commands":
            return _ks_fingerprint(datarc, cache_dir), KS_NOTE
    except Exception as exc:     # noqa: BLE001 - best effort by design: a row is never lost to its fingerprint
        return None, f"data not fingerprinted: {exc}"
    return None, f"data not fingerprinted: downstream {downstream!r} has no known data layout"


def _datarc_path(datarc: dict[str, Any], key: str) -> Path:
    if not datarc.get(key):
        raise AsitError(f"the run's config names no downstream_expert.datarc.{key}")
    path = Path(str(datarc[key]))
    if not path.exists():
        raise AsitError(f"downstream_expert.datarc.{key} {path} does not exist (any more)")
    return path


def _sid_fingerprint(datarc: dict[str, Any], cache_dir: Path | None) -> tuple[dict[str, Any], str | None]:
    """Our VoxCeleb1 reader's fingerprint when s3prl's `file_path/*/wav` folders and `meta_data` are exactly the
    ones the reader finds for the split file's folder (as `asit s3prl-data` lays them out), else s3prl's own list."""
    from tasks.datasets.voxceleb1 import wav_roots
    from tasks.fingerprint import data_fingerprint
    from tasks.task_data import load_task_data

    file_path, meta = _datarc_path(datarc, "file_path"), _datarc_path(datarc, "meta_data")
    s3prl_wavs = {p.resolve() for p in file_path.glob("*/wav") if p.is_dir()}
    root = meta.resolve().parent
    try:
        ours = {p.resolve() for p in wav_roots(root)}
    except AsitError:
        ours = set()
    if ours and ours == s3prl_wavs and (root / "iden_split.txt").resolve() == meta.resolve():
        return data_fingerprint(load_task_data("voxceleb1", root), cache_dir), None
    entries = []
    for line in meta.read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        found = sorted(file_path.glob("*/wav/" + parts[1]))
        if not found:
            raise AsitError(f"{parts[1]} (listed in {meta}) is not under {file_path}/*/wav")
        role = {"1": "train", "2": "valid", "3": "test"}.get(parts[0], parts[0])
        entries.append(FingerprintEntry.of(found[0], labels=[Path(parts[1]).parts[0]], split=role))
    note = (f"s3prl's own SID file list ({file_path}/*/wav/<path> for every line of {meta}): its folders are not the "
            f"ones our VoxCeleb1 reader finds beside the split file, so the digest is not comparable with our cells'")
    return _list_fingerprint({file_path: entries}, cache_dir), note


def ks_hash_role(filename: str) -> str | None:
    """s3prl speech_commands `split_dataset`'s role for a clip: valid, train, or None (its discarded test part). Its
    rule is the dataset's own (SHA-1 of the speaker, 10 % / 10 %), which the corpus generator's `which_set` applies."""
    from tasks.corpus.speechcommands import which_set

    return {"validation": "valid", "testing": None, "training": "train"}[which_set(filename)]


def ks_entries(train_root: Path, test_root: Path) -> dict[Path, list[FingerprintEntry]]:
    """The clips s3prl's speech_commands downstream reads, per root, as fingerprint entries (role + label)."""
    train: list[FingerprintEntry] = []
    for folder in sorted(p for p in train_root.iterdir() if p.is_dir() and p.name != KS_NOISE):
        label = folder.name if folder.name in KS_CLASSES else "_unknown_"
        for wav in sorted(folder.glob("*.wav")):
            role = ks_hash_role(wav.name)
            if role is not None:
                train.append(FingerprintEntry.of(wav, labels=[label], split=role))
    for wav in sorted((train_root / KS_NOISE).glob("*.wav")):
        train += [FingerprintEntry.of(wav, labels=["_silence_"], split=role) for role in ("train", "valid")]
    test = [FingerprintEntry.of(wav, labels=[folder.name], split="test")
            for folder in sorted(p for p in test_root.iterdir() if p.is_dir()) for wav in sorted(folder.glob("*.wav"))]
    return {train_root: train, test_root: test}


def _ks_fingerprint(datarc: dict[str, Any], cache_dir: Path | None) -> dict[str, Any]:
    train_root = _datarc_path(datarc, "speech_commands_root")
    test_root = _datarc_path(datarc, "speech_commands_test_root")
    return _list_fingerprint(ks_entries(train_root, test_root), cache_dir)


def _list_fingerprint(by_root: dict[Path, list[FingerprintEntry]], cache_dir: Path | None) -> dict[str, Any]:
    """A fingerprint of file lists under one or more roots: each root's digest (paths relative to it, so the data
    can move), combined in order; the same keys as tasks.fingerprint.data_fingerprint."""
    digests = [fingerprint_entries(entries, root, content=True, cache_dir=cache_dir)
               for root, entries in by_root.items()]
    combined = digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]
    everything = [e for entries in by_root.values() for e in entries]
    clips: dict[str, int] = {}
    for entry in everything:
        role = str(dict(entry.fields)["split"])
        clips[role] = clips.get(role, 0) + 1
    return {"digest": combined, "clips": {r: clips[r] for r in ("train", "valid", "test") if r in clips},
            "files": len({e.path for e in everything}), "missing": 0,
            "root": ", ".join(str(root) for root in by_root), "content": describe(True)}


__all__ = ["DOWNSTREAM_TASKS", "ingest_s3prl_runs", "ks_entries", "ks_hash_role", "run_folder", "s3prl_cell",
           "s3prl_data_fingerprint", "s3prl_rows", "training_run"]
