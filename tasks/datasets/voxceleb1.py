"""VoxCeleb1 identification: `wav/idXXXXX/<video>/<utt>.wav` + `iden_split.txt` (1 train, 2 valid, 3 test)."""

from __future__ import annotations

from pathlib import Path

from upstream.errors import AsitError

from .base import DatasetIndex, Example, bad_rows, check_files_exist, require

SPLITS = {"1": "train", "2": "valid", "3": "test"}


def read_voxceleb1(root: str | Path, split_file: str | Path | None = None) -> DatasetIndex:
    root = Path(root)
    split_path = Path(split_file) if split_file else root / "iden_split.txt"
    require(split_path, "VoxCeleb1 identification split (iden_split.txt)")
    wav_root = require(root / "wav", "VoxCeleb1 audio folder (wav/)")
    examples, bad = [], []
    for line in split_path.read_text().splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in SPLITS or len(Path(parts[1]).parts) != 3:
            bad.append(line)
            continue
        speaker, video, _ = Path(parts[1]).parts
        examples.append(Example(path=wav_root / parts[1], labels=(speaker,), split=SPLITS[parts[0]],
                                group=f"{speaker}/{video}"))
    if bad:
        raise bad_rows(bad, split_path, "expected '<1|2|3> idXXXXX/<video>/<utt>.wav'")
    if not examples:
        raise AsitError(f"{split_path} lists no utterances")
    check_files_exist((e.path for e in examples), split_path)
    speakers = sorted({e.labels[0] for e in examples})
    return DatasetIndex("voxceleb1", root, examples, speakers, stats="voxceleb1")
