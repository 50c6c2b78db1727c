"""ESC-50: `audio/{fold}-{src}-{take}-{target}.wav` + `meta/esc50.csv`, five folds; a src_file never spans folds."""

from __future__ import annotations

import csv
from pathlib import Path

from upstream.errors import AsitError

from .base import DatasetIndex, Example, bad_rows, check_files_exist, require

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


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
            fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            bad.append(",".join(row.values()))
            continue
        if not 1 <= fold <= 5:
            bad.append(",".join(row.values()))
            continue
        if categories.setdefault(target, row["category"]) != row["category"]:
            raise AsitError(f"{meta}: target {target} is both {categories[target]!r} and {row['category']!r}")
        examples.append(Example(path=root / "audio" / row["filename"], labels=(row["category"],), fold=fold,
                                group=row["src_file"]))
    if bad:
        raise bad_rows(bad, meta, "fold must be 1..5 and target an integer")
    if not examples:
        raise AsitError(f"{meta} lists no clips")
    check_files_exist((e.path for e in examples), meta)
    labels = [categories[t] for t in sorted(categories)]
    folds = sorted({e.fold for e in examples if e.fold is not None})
    return DatasetIndex("esc50", root, examples, labels, folds=folds, stats="esc50")
