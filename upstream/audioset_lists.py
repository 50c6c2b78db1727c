"""AudioSet's own listing files, read the same way for pretraining (labelled manifests) and for the AS-20K task:
segment CSVs (`# ` comment lines, then `YTID, start_seconds, end_seconds, "mid1,mid2"`), AST-style JSON datafiles
(`{"data": [{"wav": PATH, "labels": "/m/..,/m/.."}]}`), `class_labels_indices.csv` (`index,mid,display_name`),
and the local clip names of the common downloaders (`ytid_candidates`: Y{YTID}, {YTID}, {YTID}_{start}[_-{end}])."""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import AsitError, bad_rows

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
LABELS_CSV = "class_labels_indices.csv"
YTID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_SUFFIX = re.compile(r"^_(?P<start>\d+(?:\.\d+)?)(?:[_-](?P<end>\d+(?:\.\d+)?))?$")


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


def read_segments_csv(path: Path, known: set[str] | None) -> list[Segment]:
    """A segments CSV: `# ` comment lines, then `YTID, start_seconds, end_seconds, "mid1,mid2"`; labels must be
    in `known` (None: not checked, for readers that do not use the labels)."""
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
        unknown = [m for m in labels if known is not None and m not in known]
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
        unknown = [m for m in labels if known is not None and m not in known]
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
