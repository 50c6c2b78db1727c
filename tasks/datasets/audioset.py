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
since AS-20K numbers depend on it); `missing="error"` refuses to run with a list of the first absent clips. Malformed
lines, unknown label ids and duplicate segments are always errors.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from upstream.errors import AsitError

from .base import DatasetIndex, Example, bad_rows

MISSING_POLICIES = ("drop", "error")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
LABELS_CSV = "class_labels_indices.csv"
YTID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_SUFFIX = re.compile(r"^_(?P<start>\d+(?:\.\d+)?)(?:[_-](?P<end>\d+(?:\.\d+)?))?$")
SPLIT_FILES: dict[str, str] = {"train": "balanced_train_segments", "test": "eval_segments"}


@dataclass(frozen=True)
class Segment:
    ytid: str
    start_s: float
    end_s: float
    labels: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------- listings

def read_class_labels(path: Path) -> tuple[list[str], dict[str, str]]:
    """class_labels_indices.csv (`index,mid,display_name`) → mids in index order and mid → display name."""
    try:
        with Path(path).open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("index", "mid", "display_name") if c not in (reader.fieldnames or [])]
            if missing:
                raise AsitError(f"{path} lacks column(s) {', '.join(missing)}; expected index,mid,display_name")
            rows = list(reader)
    except FileNotFoundError:
        raise AsitError(f"AudioSet class list not found: {path}") from None
    by_index: dict[int, tuple[str, str]] = {}
    bad = []
    for row in rows:
        try:
            index = int(row["index"] or "")
        except ValueError:
            bad.append(",".join(v or "" for v in row.values()))
            continue
        if not row["mid"] or index in by_index:
            bad.append(",".join(v or "" for v in row.values()))
            continue
        by_index[index] = (row["mid"], row["display_name"] or row["mid"])
    if bad:
        raise bad_rows(bad, path, "expected a unique integer index and a mid per line")
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        raise AsitError(f"{path}: class indices must run 0..N-1 without gaps (got {len(by_index)} classes)")
    mids = [by_index[i][0] for i in range(len(by_index))]
    if len(set(mids)) != len(mids):
        raise AsitError(f"{path}: a mid is listed twice")
    return mids, {mid: name for mid, name in by_index.values()}


def read_segments_csv(path: Path, known: set[str]) -> list[Segment]:
    """A segments CSV: `# ` comment lines, then `YTID, start_seconds, end_seconds, "mid1,mid2"`."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise AsitError(f"AudioSet segments file not found: {path}") from None
    segments, bad, seen = [], [], set()
    for fields in csv.reader((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")),
                             skipinitialspace=True):
        line = ", ".join(fields)
        if len(fields) != 4 or not YTID.match(fields[0]):
            bad.append(line)
            continue
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            bad.append(line)
            continue
        labels = tuple(m.strip() for m in fields[3].split(",") if m.strip())
        if not labels or end <= start or fields[0] in seen:
            bad.append(line)
            continue
        unknown = [m for m in labels if m not in known]
        if unknown:
            raise AsitError(f"{path}: segment {fields[0]} has label(s) {', '.join(unknown)} that are not in the "
                            f"class list")
        seen.add(fields[0])
        segments.append(Segment(fields[0], start, end, labels))
    if bad:
        raise bad_rows(bad, Path(path), 'expected YTID, start_seconds, end_seconds, "mid1,mid2" with an '
                                        '11-character YTID, end > start, at least one label, no repeated YTID')
    if not segments:
        raise AsitError(f"{path} lists no segments")
    return segments


def read_datafile(path: Path, known: set[str]) -> list[tuple[Path, tuple[str, ...]]]:
    """An AST-style JSON datafile → (audio path, mids) per entry."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AsitError(f"AudioSet datafile not found: {path}") from None
    except ValueError as exc:
        raise AsitError(f"{path} is not valid JSON ({exc})") from None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise AsitError(f"{path}: expected {{\"data\": [{{\"wav\": PATH, \"labels\": \"/m/..,/m/..\"}}, …]}}")
    out, bad = [], []
    for entry in entries:
        wav = entry.get("wav") if isinstance(entry, dict) else None
        raw = entry.get("labels") if isinstance(entry, dict) else None
        labels = tuple(m.strip() for m in raw.split(",") if m.strip()) if isinstance(raw, str) else ()
        if not isinstance(wav, str) or not wav or not labels:
            bad.append(json.dumps(entry)[:120])
            continue
        unknown = [m for m in labels if m not in known]
        if unknown:
            raise AsitError(f"{path}: entry {wav} has label(s) {', '.join(unknown)} that are not in the class list")
        audio = Path(wav)
        out.append((audio if audio.is_absolute() else Path(path).parent / audio, labels))
    if bad:
        raise bad_rows(bad, Path(path), 'expected {"wav": PATH, "labels": "/m/..,/m/.."}')
    return out


# ------------------------------------------------------------------------------------------------- local clips

def ytid_candidates(stem: str) -> list[tuple[str, float | None]]:
    """(YTID, encoded start or None) readings of a file name stem under the accepted schemes."""
    found = []
    for offset in ((1, 0) if stem.startswith("Y") else (0,)):
        ytid, rest = stem[offset:offset + 11], stem[offset + 11:]
        if len(ytid) != 11 or not YTID.match(ytid):
            continue
        if rest == "":
            found.append((ytid, None))
            continue
        match = _SUFFIX.match(rest)
        if match:
            found.append((ytid, float(match.group("start"))))
    return found


def _starts_agree(encoded: float, start_s: float) -> bool:
    return abs(encoded - start_s) < 1e-3 or abs(encoded - start_s * 1000.0) < 0.5


def find_clips(folder: Path, segments: dict[str, Segment]) -> tuple[dict[str, list[Path]], list[str]]:
    """Scan `folder` recursively for audio files naming a wanted segment → ytid → paths, plus wrong-segment files."""
    if not folder.is_dir():
        raise AsitError(f"AudioSet audio folder not found: {folder}")
    clips: dict[str, list[Path]] = {}
    wrong: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in AUDIO_EXTENSIONS:
                continue
            for ytid, start in ytid_candidates(stem):
                segment = segments.get(ytid)
                if segment is None:
                    continue
                if start is not None and not _starts_agree(start, segment.start_s):
                    wrong.append(f"{Path(dirpath) / name} (segment starts at {segment.start_s:g} s)")
                    continue
                clips.setdefault(ytid, []).append(Path(dirpath) / name)
                break
    return clips, wrong


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
                              "listed": {}, "found": {}, "missing": {}, "missing_examples": [], "duplicates": 0}
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
    for split in ("train", "test"):
        listed = present = 0
        absent: list[str] = []
        for segment in csv_splits[split]:
            listed += 1
            paths = clips.get(segment.ytid)
            if not paths:
                absent.append(f"{segment.ytid} (e.g. Y{segment.ytid}.wav)")
                continue
            present += 1
            examples.append(Example(path=paths[0], labels=segment.labels, split=split, group=segment.ytid))
        for audio, mids_, group in wanted[split]:
            listed += 1
            if not audio.is_file():
                absent.append(str(audio))
                continue
            present += 1
            examples.append(Example(path=audio, labels=mids_, split=split, group=group))
        report["listed"][split], report["found"][split], report["missing"][split] = listed, present, len(absent)
        absent_all += absent
        if present == 0:
            raise AsitError(f"none of the {listed} AudioSet {split} clips listed in "
                            f"{', '.join(map(str, listings[split]))} was found (looked under {folder}; accepted "
                            f"names: Y{{YTID}}.wav, {{YTID}}.wav, {{YTID}}_{{start}}[_|-{{end}}].wav, also "
                            f".flac/.ogg/.mp3), e.g. {', '.join(absent[:3])}")
    report["missing_examples"] = absent_all[:10]
    if absent_all and missing == "error":
        raise AsitError(f"{len(absent_all)} AudioSet clip(s) listed are not stored locally "
                        f"({', '.join(f'{s}: {n}' for s, n in report['missing'].items())}), e.g. "
                        f"{', '.join(absent_all[:3])}; pass missing=drop to evaluate on the clips you have")
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
