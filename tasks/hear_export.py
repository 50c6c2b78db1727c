"""Local datasets -> heareval task folders, following hearpreprocess's output conventions.

A task folder (what `python -m heareval.embeddings.runner ... --tasks-dir` reads)::

    <task>/task_metadata.json        task_name, version, embedding_type, prediction_type, split_mode, splits,
                                     (nfolds), sample_duration, evaluation, + where the data came from
    <task>/labelvocabulary.csv       idx,label (labels sorted, as hearpreprocess does)
    <task>/<split>.json              {"<file>.wav": ["label", ...]} per split (scene tasks)
    <task>/16000/<split>/<file>.wav  mono 16-bit PCM at 16 kHz, trimmed/zero-padded to sample_duration

Splits come from the dataset readers in `tasks.datasets` (official folds and lists), never re-drawn here.
The folder is assembled in `<task>.partial/` (audio written file by file, so an interrupted run resumes) and
renamed into place once task_metadata.json, the last file, is written.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile
import torch

from upstream.atomic import atomic_write
from upstream.errors import AsitError

from .datasets import DatasetIndex, Example

HEAR_SAMPLE_RATE = 16000
FORMAT_VERSION = "asit-hear-1"


@dataclass(frozen=True)
class HearTaskSpec:
    """How one dataset becomes a heareval task (the keys heareval reads, plus the protocol it follows)."""

    task_name: str
    prediction_type: str                 # "multiclass" | "multilabel"
    split_mode: str                      # "presplit_kfold" | "trainvaltest"
    sample_duration: float | None        # seconds every clip is trimmed/padded to; None keeps full length
    evaluation: tuple[str, ...]          # heareval score names; the first one selects models
    protocol: str                        # what this follows, for the metadata and docs
    embedding_type: str = "scene"


# HEAR task folders (and their task_name) are named by dataset; the task runners and results by task
TASK_OF_DATASET = {"audioset": "as20k"}

TASK_SPECS: dict[str, HearTaskSpec] = {
    "esc50": HearTaskSpec(
        "esc50", "multiclass", "presplit_kfold", 5.0, ("top1_acc", "mAP", "d_prime", "aucroc"),
        "HEAR 2021 esc50 v2.0.0: the 5 official folds, heareval's leave-one-out rotation (test k, valid k+1, "
        "train the other 3)"),
    "speechcommands_v2": HearTaskSpec(
        "speechcommands_v2", "multiclass", "trainvaltest", 1.0, ("top1_acc",),
        "Speech Commands v0.02, all word classes (the ASiT paper's SC-V2), official validation_list/testing_list"),
    "speechcommands_v1": HearTaskSpec(
        "speechcommands_v1", "multiclass", "trainvaltest", 1.0, ("top1_acc",),
        "SUPERB KS: v0.01, 10 commands + _unknown_ + _silence_ (1 s background-noise crops), official "
        "validation_list, separate official test set"),
    "voxceleb1": HearTaskSpec(
        "voxceleb1", "multiclass", "trainvaltest", None, ("top1_acc",),
        "VoxCeleb1 identification (iden_split.txt 1/2/3 = train/valid/test); whole utterances, as SUPERB SID"),
    "audioset": HearTaskSpec(
        "audioset", "multilabel", "trainvaltest", 10.0, ("mAP", "d_prime", "aucroc"),
        "AudioSet balanced_train (AS-20K) -> eval, clips you have; valid = 1/9 of the train videos drawn as "
        "hearpreprocess does when a dataset has no validation split; scored like HEAR's fsd50k (mAP first)"),
}


def split_name(example: Example, spec: HearTaskSpec) -> str:
    """The heareval split an example belongs to: fold00.. for k-fold tasks (fold 1 -> fold00), else its split."""
    if spec.split_mode == "presplit_kfold":
        if example.fold is None:
            raise AsitError(f"{example.path}: {spec.task_name} is a k-fold task but this clip has no fold")
        return f"fold{example.fold - 1:02d}"
    if example.split not in ("train", "valid", "test"):
        raise AsitError(f"{example.path}: {spec.task_name} needs train/valid/test splits, this clip has "
                        f"{example.split!r}")
    return example.split


def unique_filename(example: Example, root: Path) -> str:
    """A flat, stable file name: the path below the dataset root with '/' -> '-' (so Speech Commands' word is
    kept, as hearpreprocess does), plus the start time for crops of a longer file."""
    try:
        rel = example.path.relative_to(root)
    except ValueError:                       # e.g. the separate Speech Commands v0.01 test set
        rel = Path(example.path.parent.parent.name, example.path.parent.name, example.path.name)
    if len(rel.parts) > 1 and rel.parts[0] in ("audio", "wav"):
        rel = Path(*rel.parts[1:])
    stem = "-".join(rel.with_suffix("").parts)
    if example.start_s or example.duration_s is not None:
        stem += f"-from{int(round(example.start_s * 1000)):07d}ms"
    return stem + ".wav"


# hearpreprocess's split percentages (train/valid/test 80/10/10) and the seed of its split draw
TRAIN_PERCENT, VALID_PERCENT = 80, 10
SPLIT_SEED = "split_train_test_val"


def carve_valid(examples: list[Example]) -> list[Example]:
    """Give a dataset without a validation split one, as hearpreprocess does (split_train_test_val): sort the
    train clips' groups (e.g. YouTube ids), shuffle them with random.Random("split_train_test_val"), and move the
    first round(n * 10 / 90) groups to "valid" (a 80/10 train/valid ratio; test is left untouched)."""
    if any(e.split == "valid" for e in examples):
        return examples
    groups = sorted({e.group or str(e.path) for e in examples if e.split == "train"})
    random.Random(SPLIT_SEED).shuffle(groups)
    share = VALID_PERCENT / (TRAIN_PERCENT + VALID_PERCENT)
    valid = set(groups[:int(round(len(groups) * share))])
    return [replace(e, split="valid") if e.split == "train" and (e.group or str(e.path)) in valid else e
            for e in examples]


def plan(index: DatasetIndex, spec: HearTaskSpec) -> dict[str, dict[str, Example]]:
    """split -> {file name: example}, checking that names are unique and every label is in the vocabulary."""
    vocabulary = set(index.labels)
    splits: dict[str, dict[str, Example]] = {}
    seen: dict[str, Path] = {}
    examples = carve_valid(index.examples) if spec.split_mode == "trainvaltest" else index.examples
    for example in examples:
        name = unique_filename(example, index.root)
        if name in seen:
            raise AsitError(f"{example.path} and {seen[name]} would both become {name} in {spec.task_name}")
        seen[name] = example.path
        unknown = [label for label in example.labels if label not in vocabulary]
        if unknown:
            raise AsitError(f"{example.path}: label(s) {unknown} are not in the {index.name} vocabulary")
        if spec.prediction_type == "multiclass" and len(example.labels) != 1:
            raise AsitError(f"{example.path}: {spec.task_name} is multiclass but this clip has labels "
                            f"{list(example.labels)}")
        splits.setdefault(split_name(example, spec), {})[name] = example
    expected = ([f"fold{f - 1:02d}" for f in index.folds] if spec.split_mode == "presplit_kfold"
                else ["train", "valid", "test"])
    missing = [s for s in expected if not splits.get(s)]
    if missing:
        raise AsitError(f"{index.root}: {spec.task_name} has no clips in split(s) {', '.join(missing)}")
    return {s: dict(sorted(splits[s].items())) for s in expected}


def prepare_audio(example: Example, sample_duration: float | None, sample_rate: int = HEAR_SAMPLE_RATE
                  ) -> np.ndarray:
    """Mono waveform at `sample_rate`, trimmed or zero-padded at the end to `sample_duration` (hearpreprocess's
    trim_pad_wav), clipped to the 16-bit range."""
    wave = example.load(sample_rate)
    if sample_duration is not None:
        target = int(round(sample_duration * sample_rate))
        wave = torch.nn.functional.pad(wave[:target], (0, max(0, target - wave.numel())))
    return wave.clamp(-1.0, 32767 / 32768).numpy()


def _write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    with atomic_write(path) as handle:
        soundfile.write(handle, wave, sample_rate, subtype="PCM_16", format="WAV")


def task_metadata(index: DatasetIndex, spec: HearTaskSpec, splits: list[str]) -> dict[str, object]:
    meta: dict[str, object] = {
        "task_name": spec.task_name,
        "version": FORMAT_VERSION,
        "embedding_type": spec.embedding_type,
        "prediction_type": spec.prediction_type,
        "split_mode": spec.split_mode,
        "splits": splits,
        "sample_duration": spec.sample_duration,
        "evaluation": list(spec.evaluation),
        "sample_rates": [HEAR_SAMPLE_RATE],
        "mode": "full",
        "source_dataset": index.name,
        "source_root": str(Path(index.root).absolute()),
        "source_clips": len(index.examples),
        "protocol": spec.protocol,
    }
    if spec.split_mode == "presplit_kfold":
        meta["nfolds"] = len(splits)
    if index.label_names:
        meta["label_names"] = {label: index.label_names.get(label, label) for label in sorted(index.labels)}
    if index.report:
        meta["source_report"] = index.report          # e.g. AudioSet clips listed / found / dropped
    return meta


def existing_task(folder: Path, meta: dict[str, object]) -> bool:
    """True if `folder` already holds this task built from the same data; AsitError if it holds another one."""
    path = folder / "task_metadata.json"
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text())
    except ValueError:
        raise AsitError(f"{path} is not valid JSON; remove {folder} or pass --force") from None
    keys = ("task_name", "version", "source_root", "source_clips", "sample_duration", "splits")
    changed = [k for k in keys if old.get(k) != meta.get(k)]
    if changed:
        raise AsitError(f"{folder} already holds a task built differently ({', '.join(changed)} differ); "
                        "pass --force to rebuild it")
    return True


def write_hear_task(index: DatasetIndex, spec: HearTaskSpec, out_root: str | Path, *, force: bool = False,
                    log: Callable[[str], None] = print) -> Path:
    """Write (or find up to date) the heareval task folder `<out_root>/<spec.task_name>`; returns its path."""
    out_root = Path(out_root)
    folder = out_root / spec.task_name
    splits = plan(index, spec)
    meta = task_metadata(index, spec, list(splits))
    if force and folder.exists():
        shutil.rmtree(folder)
    if existing_task(folder, meta):
        log(f"{spec.task_name}: up to date in {folder}")
        return folder
    if folder.exists():
        raise AsitError(f"{folder} exists but holds no task_metadata.json; remove it or pass --force")
    staging = out_root / f"{spec.task_name}.partial"
    plan_file = staging / ".plan.json"               # what the partial folder is being built from
    wanted = json.dumps(meta, sort_keys=True)
    if staging.exists() and (force or not plan_file.is_file() or plan_file.read_text() != wanted):
        shutil.rmtree(staging)                       # another dataset's leftovers are never resumed
    staging.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(wanted)
    for split, files in splits.items():
        audio_dir = staging / str(HEAR_SAMPLE_RATE) / split
        audio_dir.mkdir(parents=True, exist_ok=True)
        done = sum(1 for name in files if (audio_dir / name).is_file())
        log(f"{spec.task_name}: {split}: {len(files)} clips ({done} already written)")
        for name, example in files.items():
            if not (audio_dir / name).is_file():
                _write_wav(audio_dir / name, prepare_audio(example, spec.sample_duration), HEAR_SAMPLE_RATE)
        labels = {name: list(example.labels) for name, example in files.items()}
        (staging / f"{split}.json").write_text(json.dumps(labels, indent=1))
    with (staging / "labelvocabulary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(sorted(index.labels)))
    (staging / "task_metadata.json").write_text(json.dumps(meta, indent=2))
    plan_file.unlink()
    staging.rename(folder)
    log(f"{spec.task_name}: written to {folder}")
    return folder
