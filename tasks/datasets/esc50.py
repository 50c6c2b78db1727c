"""ESC-50: `audio/{fold}-{src}-{take}-{target}.wav` + `meta/esc50.csv`, five folds; a src_file never spans folds.
A listed clip that is missing or holds no samples is an error naming it (the folds are fixed lists)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from upstream.errors import AsitError

from .base import DatasetIndex, Example, bad_rows, check_files_exist, require

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def _row_text(row: dict[str, str | None]) -> str:
    return ",".join(v if isinstance(v, str) else "" for v in row.values())


def _row_is_consistent(row: dict[str, str | None], fold: int, target: int) -> bool:
    """The file name repeats fold and target (`1-100032-A-0.wav`): a row contradicting its own name is corrupt."""
    parts = Path(row.get("filename") or "").stem.split("-")
    return (len(parts) == 4 and parts[0] == str(fold) and parts[3] == str(target)
            and bool(row.get("src_file")) and bool(row.get("category")))


def read_esc50(root: str | Path) -> DatasetIndex:
    root = Path(root)
    meta = require(root / "meta" / "esc50.csv", "ESC-50 metadata (meta/esc50.csv)")
    with meta.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing_cols = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing_cols:
            raise AsitError(f"{meta} lacks column(s) {', '.join(missing_cols)}; expected {','.join(COLUMNS)}")
        rows = list(reader)
    examples, bad, categories = [], [], {}
    for row in rows:
        try:
            fold, target = int(row["fold"] or ""), int(row["target"] or "")
        except ValueError:
            bad.append(_row_text(row))
            continue
        if not 1 <= fold <= 5 or not _row_is_consistent(row, fold, target):
            bad.append(_row_text(row))
            continue
        if categories.setdefault(target, row["category"]) != row["category"]:
            raise AsitError(f"{meta}: target {target} is both {categories[target]!r} and {row['category']!r}")
        examples.append(Example(path=root / "audio" / str(row["filename"]), labels=(str(row["category"]),),
                                fold=fold, group=row["src_file"]))
    if bad:
        raise bad_rows(bad, meta, "expected <fold>-<src>-<take>-<target>.wav with fold 1..5 and an integer target "
                                  "matching the fold and target columns")
    if not examples:
        raise AsitError(f"{meta} lists no clips")
    folds_of: dict[str, set[int]] = defaultdict(set)
    for example in examples:
        folds_of[str(example.group)].add(int(example.fold or 0))
    leaking = sorted(src for src, folds in folds_of.items() if len(folds) > 1)
    if leaking:
        raise AsitError(f"{meta}: {len(leaking)} src_file(s) appear in several folds (e.g. "
                        f"{', '.join(f'{s} in folds {sorted(folds_of[s])}' for s in leaking[:3])}); ESC-50 keeps "
                        "every source recording inside one fold, or cross-validation leaks")
    check_files_exist((e.path for e in examples), meta)
    labels = [categories[t] for t in sorted(categories)]
    folds = sorted({e.fold for e in examples if e.fold is not None})
    return DatasetIndex("esc50", root, examples, labels, folds=folds, stats="esc50")
