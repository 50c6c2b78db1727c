"""VoxCeleb1 identification: `wav/idXXXXX/<video>/<utt>.wav` + `iden_split.txt` (1 train, 2 valid, 3 test).

The two official archives (`vox1_dev_wav.zip`, `vox1_test_wav.zip`) both unpack into `wav/`; kept apart they sit in
`vox1_dev_wav/wav/` and `vox1_test_wav/wav/` (s3prl globs `*/wav/<path>` for the same reason). Every `wav/` folder
directly under the root or one level below it is searched, in that order. A listed utterance that is missing or holds
no samples is an error naming it (the split is a fixed list; an empty clip would be embedded as padding).
"""

from __future__ import annotations

import re
from pathlib import Path

from upstream.errors import AsitError

from .base import DatasetIndex, Example, bad_rows, empty_audio_error, holds_no_samples, require

SPLITS = {"1": "train", "2": "valid", "3": "test"}
SPEAKER = re.compile(r"^id\d{5}$")


def wav_roots(root: Path) -> list[Path]:
    """`root/wav` first, then `root/*/wav` (sorted), the folders utterance paths are relative to."""
    found = [root / "wav"] if (root / "wav").is_dir() else []
    found += sorted(p for p in root.glob("*/wav") if p.is_dir())
    if not found:
        raise AsitError(f"VoxCeleb1 audio folder not found: {root / 'wav'} (nor {root}/*/wav, e.g. "
                        "vox1_dev_wav/wav)")
    return found


def read_voxceleb1(root: str | Path, split_file: str | Path | None = None) -> DatasetIndex:
    root = Path(root)
    split_path = Path(split_file) if split_file else root / "iden_split.txt"
    require(split_path, "VoxCeleb1 identification split (iden_split.txt)")
    folders = wav_roots(root)
    entries, bad = [], []
    for line in split_path.read_text().splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if (len(parts) != 2 or parts[0] not in SPLITS or len(Path(parts[1]).parts) != 3
                or not SPEAKER.match(Path(parts[1]).parts[0]) or not parts[1].endswith(".wav")):
            bad.append(line)
            continue
        entries.append((SPLITS[parts[0]], parts[1]))
    if bad:
        raise bad_rows(bad, split_path, "expected '<1|2|3> idXXXXX/<video>/<utt>.wav'")
    if not entries:
        raise AsitError(f"{split_path} lists no utterances")
    examples, missing, empty = [], [], []
    for split, relpath in entries:
        path = next((folder / relpath for folder in folders if (folder / relpath).is_file()), None)
        if path is None:
            missing.append(str(folders[0] / relpath))
            continue
        if holds_no_samples(path):
            empty.append(str(path))
        speaker, video, _ = Path(relpath).parts
        examples.append(Example(path=path, labels=(speaker,), split=split, group=f"{speaker}/{video}"))
    if missing:
        raise AsitError(f"{len(missing)} audio file(s) listed in {split_path} are missing from "
                        f"{', '.join(map(str, folders))}, e.g. {', '.join(missing[:3])}")
    if empty:
        raise empty_audio_error(empty, split_path)
    speakers = sorted({e.labels[0] for e in examples})
    return DatasetIndex("voxceleb1", root, examples, speakers, stats="voxceleb1")
