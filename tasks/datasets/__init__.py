"""Readers of the benchmarks' own on-disk layouts. Each returns a `DatasetIndex`; none copies or converts audio.

Missing, malformed or empty (0-sample) files raise `AsitError` listing the first offending paths: a silent skip would
change the split and make numbers incomparable, and an empty clip would be embedded as padding. (AudioSet is the one
exception by necessity — listed clips taken down from YouTube, or whose download failed, are the norm — and its
reader makes the policy explicit: `missing="drop"|"error"`, counts reported, empty clips counted apart.)
`Example.load` refuses a file or segment without samples, or with NaN / Inf samples, naming the file.
"""

from __future__ import annotations

from .audioset import read_audioset
from .base import DatasetIndex, Example, check_files_exist
from .esc50 import read_esc50
from .speechcommands import SUPERB_COMMANDS, read_speechcommands
from .voxceleb1 import read_voxceleb1

__all__ = ["DatasetIndex", "Example", "check_files_exist", "read_audioset", "read_esc50", "read_speechcommands",
           "read_voxceleb1", "SUPERB_COMMANDS"]
