"""Speech Commands: `<word>/<speaker>_nohash_<n>.wav`, `validation_list.txt`, `testing_list.txt`,
`_background_noise_/`. A listed file that is missing, or any wav (word, noise or test-set file) without samples, is
an error naming it: the splits are fixed lists, and an empty clip would be embedded as padding.

- v2: every word folder is a class (35 in the real release); splits from the official lists.
- v1 (SUPERB KS protocol, 12 classes): the 10 command words, every other word as `_unknown_`, and `_silence_`
  made of 1 s crops of the background-noise files; train/valid from the v0.01 lists, test from the separate
  official test set (`speech_commands_test_set_v0.01/`, which ships `_silence_` and `_unknown_` folders). Files of
  the v0.01 testing list are not used, as in SUPERB.
"""

from __future__ import annotations

from pathlib import Path

import soundfile

from upstream.errors import AsitError

from .base import DatasetIndex, Example, bad_rows, check_files_exist, require

SUPERB_COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
NOISE_DIR = "_background_noise_"
VALID_FRACTION = 0.2     # the last 20% of each noise file's 1 s crops are valid, the rest train (contiguous, so
                         # no valid crop is the neighbour of a train crop except at one boundary per file)


def _speaker(path: str) -> str:
    return Path(path).name.split("_nohash_")[0]


def _read_list(path: Path, root: Path) -> set[str]:
    require(path, f"Speech Commands split list ({path.name})")
    entries = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    bad = sorted(e for e in entries if len(Path(e).parts) != 2 or not e.endswith(".wav")
                 or Path(e).parts[0] == NOISE_DIR)
    if bad:
        raise bad_rows(bad, path, "expected <word>/<speaker>_nohash_<n>.wav")
    check_files_exist((root / e for e in sorted(entries)), path)
    return entries


def _word_files(root: Path) -> list[str]:
    """Every `<word>/*.wav`, each checked to hold samples (an empty one is an error naming it)."""
    files = sorted(str(p.relative_to(root)) for p in root.glob("*/*.wav") if p.parent.name != NOISE_DIR)
    if not files:
        raise AsitError(f"{root} holds no <word>/<speaker>_nohash_<n>.wav files")
    check_files_exist((root / f for f in files), f"{root} (<word>/*.wav)")
    return files


def _silence_crops(root: Path, seconds: float = 1.0) -> list[Example]:
    noise = sorted((root / NOISE_DIR).glob("*.wav"))
    if not noise:
        raise AsitError(f"{root / NOISE_DIR} holds no background noise wavs (needed for {SILENCE})")
    crops = []
    for path in noise:
        info = soundfile.info(str(path))
        if info.frames == 0:
            raise AsitError(f"background noise file {path} holds no samples (0 frames); re-extract it (it is where "
                            f"{SILENCE} examples are cropped from)")
        count = int(info.frames / info.samplerate // seconds)
        first_valid = count - int(count * VALID_FRACTION)
        for k in range(count):
            split = "valid" if k >= first_valid else "train"
            crops.append(Example(path=path, labels=(SILENCE,), split=split, group=path.stem, start_s=k * seconds,
                                 duration_s=seconds))
    return crops


def read_speechcommands(root: str | Path, version: str = "v2", test_root: str | Path | None = None
                        ) -> DatasetIndex:
    """`version` 'v2' (all words) or 'v1' (SUPERB 12-class); `test_root`: the v1 official test set folder
    (default: `speech_commands_test_set_v0.01` beside `root`)."""
    root = Path(root)
    require(root, "Speech Commands folder")
    valid = _read_list(root / "validation_list.txt", root)
    test = _read_list(root / "testing_list.txt", root)
    files = _word_files(root)
    if version == "v2":
        examples = [Example(root / f, (Path(f).parent.name,), "valid" if f in valid else "test" if f in test
                            else "train", group=_speaker(f)) for f in files]
        labels = sorted({e.labels[0] for e in examples})
        return DatasetIndex("speechcommands_v2", root, examples, labels, stats="speechcommands_v2")
    if version != "v1":
        raise AsitError(f"Speech Commands version must be 'v1' or 'v2', got {version!r}")

    def label(word: str) -> str:
        return word if word in SUPERB_COMMANDS else UNKNOWN

    examples = [Example(root / f, (label(Path(f).parent.name),), "valid" if f in valid else "train",
                        group=_speaker(f)) for f in files if f not in test]
    examples += _silence_crops(root)
    test_dir = Path(test_root) if test_root else root.parent / "speech_commands_test_set_v0.01"
    require(test_dir, "SUPERB's official Speech Commands v0.01 test set folder")
    test_files = sorted(test_dir.glob("*/*.wav"))
    unknown_folders = sorted({p.parent.name for p in test_files} - set(SUPERB_COMMANDS) - {SILENCE, UNKNOWN})
    if unknown_folders:
        raise AsitError(f"{test_dir} has folder(s) {', '.join(unknown_folders)}; the v0.01 test set holds only "
                        f"the 10 commands, {SILENCE} and {UNKNOWN}")
    if not test_files:
        raise AsitError(f"{test_dir} holds no test wavs")
    check_files_exist(test_files, f"{test_dir} (<label>/*.wav)")
    examples += [Example(p, (p.parent.name,), "test", group=_speaker(p.name)) for p in test_files]
    labels = list(SUPERB_COMMANDS) + [UNKNOWN, SILENCE]
    return DatasetIndex("speechcommands_v1", root, examples, labels, stats="speechcommands_v1")
