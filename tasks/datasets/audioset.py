"""AudioSet (AS-20K: balanced_train → eval): segment CSVs or AST-style JSON datafiles, plus class_labels_indices.csv.

Two ways of listing clips are read:

- **Segment CSVs** as Google publishes them (`balanced_train_segments.csv`, `eval_segments.csv`, …): `# ` comment
  lines, then `YTID, start_seconds, end_seconds, "mid1,mid2"`; the clips themselves are stored locally, named after
  the YouTube id in one of the schemes below, anywhere under the audio folder (default: the dataset root).
- **AST-style JSON datafiles** `{"data": [{"wav": PATH, "labels": "/m/..,/m/.."}, …]}` (extra keys such as
  `video_id` are ignored); relative `wav` paths are taken relative to the JSON file's folder.

Local clip names accepted for segment CSVs (YTID = the 11-character YouTube id; extension .wav/.flac/.ogg/.mp3):

    Y{YTID}.wav                  PANNs' downloader (audioset_tagging_cnn): audios/<csv stem>/Y{YTID}.wav, 32 kHz
    {YTID}.wav                   plain id (many ad-hoc scripts, Hugging Face exports)
    {YTID}_{start}.wav           id + start in seconds (AST datafiles: --4gqARaEJE_0.000.flac) or milliseconds
    {YTID}_{start}_{end}.wav     audiosetdl: start/end in milliseconds (…_30000_40000.flac)
    {YTID}_{start}-{end}.wav     audioset-download (pip): start/end in seconds (…_30.0-40.0.ogg), in label folders

A start encoded in the name must equal the CSV's start (in seconds or milliseconds); a file naming another segment of
a listed video is an error, not a silent substitute. When one segment has several files (audioset-download copies a
clip into each of its labels' folders; a wav and a flac of one clip) the first path in sorted order is used and the
count is reported.

Listed clips that are absent locally are the norm for AudioSet (videos taken down): `missing="drop"` (default) leaves
them out and records how many were listed, found and dropped per split in `DatasetIndex.report` (results carry it,
since AS-20K numbers depend on it); `missing="error"` refuses to run with a list of the first absent clips. A stored
clip holding no samples (0 bytes or 0 frames: a failed download or extraction) is treated the same way, counted apart:
with `missing="drop"` it is left out, counted in `report["empty"]` (first paths in `report["empty_examples"]`) and a
line with the counts is printed to stderr; with `missing="error"` it is an error naming the files. (When a segment
has several files, the first one in sorted order holding samples is used.) Malformed lines, unknown label ids and
duplicate segments are always errors.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from upstream.audioset_lists import (AUDIO_EXTENSIONS, LABELS_CSV, YTID, Segment, find_clips,  # noqa: F401
                                     read_class_labels, read_datafile, read_segments_csv, ytid_candidates)
from upstream.errors import AsitError

from .base import DatasetIndex, Example, holds_no_samples

MISSING_POLICIES = ("drop", "error")
SPLIT_FILES: dict[str, str] = {"train": "balanced_train_segments", "test": "eval_segments"}


# ------------------------------------------------------------------------------------------------------ reader

def resolve_listing(root: Path, name: str, kind: str) -> Path:
    """A split given as a name (`eval_segments` → root/ or root/metadata/ + .csv) or a .csv/.json path."""
    path = Path(name)
    if path.suffix.lower() in (".csv", ".json"):
        candidates = [path] if path.is_absolute() else [root / path, root / "metadata" / path]
    else:
        candidates = [root / f"{name}.csv", root / "metadata" / f"{name}.csv"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AsitError(f"AudioSet {kind} list not found: tried {', '.join(map(str, candidates))}")


def read_audioset(root: str | Path, *, train: str | Sequence[str] = SPLIT_FILES["train"],
                  test: str | Sequence[str] = SPLIT_FILES["test"], labels: str = LABELS_CSV,
                  audio_dir: str | Path | None = None, missing: str = "drop") -> DatasetIndex:
    """AudioSet as a multi-label `DatasetIndex` with splits "train" and "test" (AS-20K: balanced_train → eval).

    `train`/`test`: segment CSV names or .csv/.json paths (several for a union, e.g. AS-2M); `labels`: the class
    list; `audio_dir`: where local clips of segment CSVs are searched (default `root`); `missing`: drop|error.
    """
    root = Path(root)
    if not root.is_dir():
        raise AsitError(f"AudioSet folder not found: {root}")
    if missing not in MISSING_POLICIES:
        raise AsitError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    splits = {"train": [train] if isinstance(train, str) else list(train),
              "test": [test] if isinstance(test, str) else list(test)}
    listings = {split: [resolve_listing(root, n, split) for n in names] for split, names in splits.items()}
    label_csv = _find_labels(root, labels, [p for paths in listings.values() for p in paths])
    mids, names = read_class_labels(label_csv)
    known = set(mids)

    wanted: dict[str, list[tuple[Path, tuple[str, ...], str]]] = {}   # split -> (expected path, labels, group)
    segments: dict[str, Segment] = {}
    csv_splits: dict[str, list[Segment]] = {"train": [], "test": []}
    for split, paths in listings.items():
        wanted[split] = []
        for path in paths:
            if path.suffix.lower() == ".json":
                wanted[split] += [(audio, mids_, audio.stem) for audio, mids_ in read_datafile(path, known)]
            else:
                for segment in read_segments_csv(path, known):
                    if segment.ytid in segments:
                        raise AsitError(f"segment {segment.ytid} is listed twice across "
                                        f"{', '.join(str(p) for ps in listings.values() for p in ps)}")
                    segments[segment.ytid] = segment
                    csv_splits[split].append(segment)

    report: dict[str, Any] = {"missing_policy": missing, "label_list": str(label_csv),
                              "lists": {s: [str(p) for p in ps] for s, ps in listings.items()},
                              "listed": {}, "found": {}, "missing": {}, "missing_examples": [], "duplicates": 0,
                              "empty": {}, "empty_examples": []}
    clips: dict[str, list[Path]] = {}
    folder = Path(audio_dir) if audio_dir else root
    if segments:
        clips, wrong = find_clips(folder, segments)
        if wrong:
            raise AsitError(f"{len(wrong)} local clip(s) under {folder} name a listed video but another segment "
                            f"of it, e.g. {'; '.join(wrong[:3])}")
        report["audio_dir"] = str(folder)
        report["duplicates"] = sum(1 for paths in clips.values() if len(paths) > 1)

    examples: list[Example] = []
    absent_all: list[str] = []
    empty_all: list[str] = []
    for split in ("train", "test"):
        listed = present = 0
        absent: list[str] = []
        empty: list[str] = []
        for segment in csv_splits[split]:
            listed += 1
            paths = clips.get(segment.ytid)
            if not paths:
                absent.append(f"{segment.ytid} (e.g. Y{segment.ytid}.wav)")
                continue
            usable = next((path for path in paths if not holds_no_samples(path)), None)
            if usable is None:
                empty.append(str(paths[0]))
                continue
            present += 1
            examples.append(Example(path=usable, labels=segment.labels, split=split, group=segment.ytid))
        for audio, mids_, group in wanted[split]:
            listed += 1
            if not audio.is_file():
                absent.append(str(audio))
                continue
            if holds_no_samples(audio):
                empty.append(str(audio))
                continue
            present += 1
            examples.append(Example(path=audio, labels=mids_, split=split, group=group))
        report["listed"][split], report["found"][split], report["missing"][split] = listed, present, len(absent)
        report["empty"][split] = len(empty)
        absent_all += absent
        empty_all += empty
        if present == 0:
            emptied = f"; {len(empty)} stored clip(s) hold no samples, e.g. {', '.join(empty[:3])}" if empty else ""
            raise AsitError(f"none of the {listed} AudioSet {split} clips listed in "
                            f"{', '.join(map(str, listings[split]))} was found (looked under {folder}; accepted "
                            f"names: Y{{YTID}}.wav, {{YTID}}.wav, {{YTID}}_{{start}}[_|-{{end}}].wav, also "
                            f".flac/.ogg/.mp3), e.g. {', '.join(absent[:3]) or '-'}{emptied}")
    report["missing_examples"] = absent_all[:10]
    report["empty_examples"] = empty_all[:10]
    if absent_all and missing == "error":
        raise AsitError(f"{len(absent_all)} AudioSet clip(s) listed are not stored locally "
                        f"({', '.join(f'{s}: {n}' for s, n in report['missing'].items())}), e.g. "
                        f"{', '.join(absent_all[:3])}; pass missing=drop to evaluate on the clips you have")
    if empty_all and missing == "error":
        raise AsitError(f"{len(empty_all)} AudioSet clip(s) stored hold no samples "
                        f"({', '.join(f'{s}: {n}' for s, n in report['empty'].items())}), e.g. "
                        f"{', '.join(empty_all[:3])}; re-download them, or pass missing=drop to leave them out")
    if empty_all:
        print(f"AudioSet: left out {len(empty_all)} stored clip(s) holding no samples "
              f"({', '.join(f'{s} {n}' for s, n in report['empty'].items())}; missing=drop), e.g. "
              f"{', '.join(empty_all[:3])}", file=sys.stderr, flush=True)
    return DatasetIndex("audioset", root, examples, mids, multilabel=True, stats="audioset", label_names=names,
                        report=report)


def _find_labels(root: Path, labels: str, listings: list[Path]) -> Path:
    path = Path(labels)
    if path.is_absolute():
        return path
    candidates = [root / path, root / "metadata" / path] + [p.parent / path for p in listings]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AsitError(f"AudioSet class list not found: tried {', '.join(map(str, dict.fromkeys(candidates)))}")
