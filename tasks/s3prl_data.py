"""`asit s3prl-data`: lay out local datasets the way s3prl's speech_commands (KS) and voxceleb1 (SID) downstreams
read them, with folder symlinks (no audio is copied), and write run-ready configs from the shipped profiles.

Each dataset is first read with our own reader (`tasks.datasets`), so a broken download fails here with one line
rather than deep inside s3prl. Layout written under `OUT/`::

    speech_commands/train/<word>, _background_noise_  -> links to the v0.01 folders our reader found
    speech_commands/test/<class>                       -> links to SUPERB's official test set folders
    voxceleb1/audio/<name>                             -> links to the folders holding wav/: ROOT itself (_root)
                                                          and/or ROOT/<sub> (SUPERB's dev/, test/), as our
                                                          reader finds them; s3prl globs "audio/*/wav/<path>"
    voxceleb1/iden_split.txt                           -> link to ROOT/iden_split.txt
    <task>/<profile>.yaml                              the shipped profile with the datarc paths filled in
    <task>/prepared.json                               sources, counts from our reader and from s3prl's split

KS: s3prl splits train/dev itself with the dataset's hash rule (SHA-1 of the speaker id, as the official list files
were made) rather than reading validation_list.txt; the prepared.json records both counts and the command warns
when they differ. SID: s3prl maps `idNNNNN` to class NNNNN - 10001 out of a fixed 1,251, so other ids are refused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from upstream.errors import AsitError
from upstream.s3prl_upstream import PROFILES, config_path

from .datasets import DatasetIndex, read_speechcommands, read_voxceleb1
from .datasets.voxceleb1 import wav_roots

SID_FIRST_ID, SID_SPEAKERS = 10001, 1251     # s3prl voxceleb1: label = int(id[2:]) - 10001, speaker_num = 1251
NOISE_DIR = "_background_noise_"


@dataclass
class PreparedTask:
    task: str                                   # s3prl downstream name (-d)
    folder: Path
    datarc: dict[str, str]                      # the config's downstream_expert.datarc paths
    configs: dict[str, Path] = field(default_factory=dict)   # profile -> run-ready config
    summary: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ helpers


def link(target: Path, at: Path) -> Path:
    """Symlink `at` -> `target` (absolute). An existing link is re-pointed; anything else at `at` is an error."""
    target = target.resolve()
    if at.is_symlink():
        if Path(os.readlink(at)) == target:
            return at
        at.unlink()
    elif at.exists():
        raise AsitError(f"{at} exists and is not a link made by asit s3prl-data; remove it or choose another --out")
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target, target_is_directory=target.is_dir())
    return at


def prune_links(folder: Path, keep: Iterable[str]) -> None:
    """Remove links in `folder` left from an earlier preparation that are no longer wanted."""
    keep = set(keep)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_symlink() and entry.name not in keep:
                entry.unlink()


def write_configs(task: str, folder: Path, datarc: dict[str, str]) -> dict[str, Path]:
    """Every shipped profile of `task` with its datarc paths replaced by ours."""
    written = {}
    for profile in PROFILES:
        template = config_path(task, profile)
        config = yaml.safe_load(template.read_text())
        missing = sorted(set(datarc) - set(config["downstream_expert"]["datarc"]))
        if missing:
            raise AsitError(f"{template} has no datarc key(s) {', '.join(missing)}")
        config["downstream_expert"]["datarc"].update(datarc)
        path = folder / f"{profile}.yaml"
        header = f"# written by asit s3prl-data from {template.name}; data paths point at {folder}\n"
        path.write_text(header + yaml.safe_dump(config, sort_keys=False))
        written[profile] = path
    return written


def _counts(index: DatasetIndex) -> dict[str, int]:
    out: dict[str, int] = {}
    for example in index.examples:
        out[str(example.split)] = out.get(str(example.split), 0) + 1
    return out


# ------------------------------------------------------------------------------------------ KS


def s3prl_speech_commands_split(root: Path) -> tuple[int, int]:
    """Word clips in s3prl's own train/dev split of a Speech Commands folder (its `split_dataset`, hash rule)."""
    from upstream.s3prl_upstream import compat

    compat.install()
    from s3prl.downstream.speech_commands.expert import split_dataset

    train, valid = split_dataset(root)
    return len(train), len(valid)


def prepare_speech_commands(root: str | Path, out: str | Path, test_root: str | Path | None = None
                            ) -> PreparedTask:
    """SUPERB KS: Speech Commands v0.01 (+ the official test set, default beside it) -> `OUT/speech_commands`."""
    index = read_speechcommands(root, "v1", test_root)
    root = Path(root)
    test_dir = Path(test_root) if test_root else root.parent / "speech_commands_test_set_v0.01"
    folder = Path(out) / "speech_commands"
    words = sorted({e.path.parent.name for e in index.examples if e.split in ("train", "valid")})
    if NOISE_DIR not in words:
        raise AsitError(f"{root / NOISE_DIR} is needed for s3prl's _silence_ class")
    classes = sorted({e.path.parent.name for e in index.examples if e.split == "test"})
    for name in words:
        link(root / name, folder / "train" / name)
    for name in classes:
        link(test_dir / name, folder / "test" / name)
    prune_links(folder / "train", words)
    prune_links(folder / "test", classes)
    datarc = {"speech_commands_root": str((folder / "train").absolute()),
              "speech_commands_test_root": str((folder / "test").absolute())}
    train_words, dev_words = s3prl_speech_commands_split(folder / "train")
    noise = len(list((root / NOISE_DIR).glob("*.wav")))
    reader_dev_words = sum(1 for e in index.examples if e.split == "valid" and e.path.parent.name != NOISE_DIR)
    summary = {
        "task": "speech_commands", "root": str(root.resolve()), "test_root": str(test_dir.resolve()),
        "reader_examples": _counts(index),
        # s3prl adds every noise file once to train and to dev as _silence_ (a random 1 s crop per visit)
        "s3prl_examples": {"train": train_words + noise, "dev": dev_words + noise,
                           "test": sum(1 for e in index.examples if e.split == "test")},
        "dev_word_clips": {"reader": reader_dev_words, "s3prl": dev_words},
        "split_rule_agrees": reader_dev_words == dev_words,
    }
    return _finish("speech_commands", folder, datarc, summary)


# ------------------------------------------------------------------------------------------ SID


def check_sid_speakers(speakers: Iterable[str], source: Path) -> None:
    """s3prl's voxceleb1 reader turns idNNNNN into class NNNNN - 10001 of 1,251; refuse ids it would mislabel."""
    bad = [s for s in speakers if not re.fullmatch(r"id\d{5}", s)
           or not SID_FIRST_ID <= int(s[2:]) < SID_FIRST_ID + SID_SPEAKERS]
    if bad:
        raise AsitError(f"{source}: speaker id(s) {', '.join(bad[:3])} are outside id{SID_FIRST_ID}..id"
                        f"{SID_FIRST_ID + SID_SPEAKERS - 1}, which s3prl's voxceleb1 downstream requires")


def prepare_voxceleb1(root: str | Path, out: str | Path) -> PreparedTask:
    """SUPERB SID: VoxCeleb1 (`wav/` + `iden_split.txt`) -> `OUT/voxceleb1`."""
    index = read_voxceleb1(root)
    root = Path(root)
    check_sid_speakers(index.labels, root / "iden_split.txt")
    folder = Path(out) / "voxceleb1"
    names = []
    for wav in wav_roots(root):                 # root/wav, or SUPERB's root/dev/wav + root/test/wav, …
        names.append("_root" if wav.parent == root else wav.parent.name)
        link(wav.parent, folder / "audio" / names[-1])
    prune_links(folder / "audio", names)
    link(root / "iden_split.txt", folder / "iden_split.txt")
    datarc = {"file_path": str((folder / "audio").absolute()),
              "meta_data": str((folder / "iden_split.txt").absolute())}
    summary = {"task": "voxceleb1", "root": str(root.resolve()), "speakers": len(index.labels),
               "reader_examples": _counts(index)}
    return _finish("voxceleb1", folder, datarc, summary)


def _finish(task: str, folder: Path, datarc: dict[str, str], summary: dict[str, Any]) -> PreparedTask:
    prepared = PreparedTask(task, folder, datarc, write_configs(task, folder, datarc), summary)
    summary["configs"] = {k: str(v) for k, v in prepared.configs.items()}
    (folder / "prepared.json").write_text(json.dumps(summary, indent=2))
    return prepared


def prepare_corpus(corpus: Any, out: str | Path) -> dict[str, PreparedTask]:
    """Both tasks from a generated corpus (`tasks.corpus.CorpusPaths`)."""
    return {"speech_commands": prepare_speech_commands(corpus.speechcommands_v1, out, corpus.speechcommands_v1_test),
            "voxceleb1": prepare_voxceleb1(corpus.voxceleb1, out)}


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=("speech_commands", "voxceleb1"), help="s3prl downstream to prepare for")
    parser.add_argument("--root", type=Path, required=True,
                        help="speech_commands_v0.01 folder, or the VoxCeleb1 folder holding wav/ and iden_split.txt")
    parser.add_argument("--test-root", type=Path, default=None,
                        help="speech_commands_test_set_v0.01 folder (default: beside --root)")
    parser.add_argument("--out", type=Path, required=True, help="where links and configs are written")


def run(args: argparse.Namespace) -> int:
    if args.task == "speech_commands":
        prepared = prepare_speech_commands(args.root, args.out, args.test_root)
    else:
        if args.test_root is not None:
            raise AsitError("--test-root is only for speech_commands")
        prepared = prepare_voxceleb1(args.root, args.out)
    print(json.dumps(prepared.summary, indent=2))
    if prepared.summary.get("split_rule_agrees") is False:
        print("asit s3prl-data: warning: s3prl's hash-rule dev split differs from validation_list.txt "
              f"({prepared.summary['dev_word_clips']}); s3prl uses the hash rule")
    print(f"next: asit s3prl -- -m train -u asit_local -k ENCODER -d {prepared.task} "
          f"-c {prepared.configs['superb']} -p result/{prepared.task}_asit")
    return 0
