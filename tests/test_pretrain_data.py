"""Pretraining data beyond unlabelled folders: labelled manifests, crop modes, waveforms of the crops."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tone_clips
from upstream.audioset_lists import read_class_labels, read_segments_csv
from upstream.errors import AsitError
from upstream.frontend import Frontend, FrontendConfig
from upstream.objectives.base import DataNeeds
from upstream.pretrain_config import DataConfig
from upstream.pretrain_data import CropViewsDataset, check_data_needs, crop_spans, list_clips

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_audioset_segments_csv_gives_labels_and_counts_absent_clips(corpus) -> None:
    segments = corpus.audioset / "metadata" / "balanced_train_segments.csv"
    with pytest.raises(AsitError, match=r"3 file\(s\) listed in .*balanced_train_segments.csv do not exist.*"
                                        r"data.missing: drop"):
        list_clips(DataConfig(source=str(segments), labels=True))
    clips = list_clips(DataConfig(source=str(segments), labels=True, missing="drop"))
    assert clips.report == {"listed": 48, "found": 45, "dropped": 3}
    mids, _ = read_class_labels(corpus.audioset / "metadata" / "class_labels_indices.csv")
    assert clips.classes == mids and clips.labels is not None and clips.labels.shape == (45, len(mids))
    by_ytid = {s.ytid: s.labels for s in read_segments_csv(segments, set(mids))}
    for path, row in zip(clips.files, clips.labels):
        ytid = path.stem[1:]                               # PANNs' Y{YTID}.wav
        assert {mids[i] for i in np.flatnonzero(row)} == set(by_ytid[ytid])
    unlabelled = list_clips(DataConfig(source=str(segments), missing="drop"))
    assert unlabelled.files == clips.files and unlabelled.labels is None


def _json_manifest(folder: Path, labels: list[str]) -> Path:
    clips = write_tone_clips(folder / "audio", len(labels))
    manifest = folder / "train.json"
    manifest.write_text(json.dumps({"data": [{"wav": f"audio/{p.name}", "labels": lab}
                                             for p, lab in zip(clips, labels)]}))
    with (folder / "class_labels_indices.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([[0, "/m/a", "A"], [1, "/m/b", "B"], [2, "/m/c", "C"]])
    return manifest


def test_ast_json_labels_are_multi_hot_in_class_list_order(tmp_path: Path) -> None:
    manifest = _json_manifest(tmp_path, ["/m/c", "/m/a,/m/b", "/m/b"])
    clips = list_clips(DataConfig(source=str(manifest), labels=True))
    assert clips.labels.tolist() == [[0, 0, 1], [1, 1, 0], [0, 1, 0]]  # type: ignore[union-attr]
    dataset = CropViewsDataset(clips, FrontendConfig(), 32, 1, seed=0)
    assert dataset[1]["labels"].tolist() == [1.0, 1.0, 0.0]


def test_unknown_labels_and_missing_class_lists_are_refused(tmp_path: Path) -> None:
    manifest = _json_manifest(tmp_path, ["/m/a", "/m/zzz"])
    with pytest.raises(AsitError, match=r"label\(s\) /m/zzz that are not in the class list"):
        list_clips(DataConfig(source=str(manifest), labels=True))
    (tmp_path / "class_labels_indices.csv").unlink()
    with pytest.raises(AsitError, match=r"no class_labels_indices.csv beside .*train.json.*give data.label_csv"):
        list_clips(DataConfig(source=str(manifest), labels=True))
    with pytest.raises(AsitError, match=r"data.labels needs a labelled manifest"):
        list_clips(DataConfig(source=str(tmp_path / "audio"), labels=True))


def test_crop_modes() -> None:
    rng = np.random.default_rng(0)
    assert crop_spans(500, 100, 3, "none", rng).tolist() == [0, 0, 0]
    random = crop_spans(500, 100, 2000, "random", rng)
    assert random.min() >= 0 and random.max() == 400      # every start keeps the crop inside the clip
    loop = crop_spans(500, 100, 2000, "loop", rng)
    assert loop.max() > 400 and loop.max() < 500          # starts anywhere: the crop wraps round
    assert crop_spans(50, 100, 4, "random", rng).tolist() == [0, 0, 0, 0]


def test_loop_crops_wrap_and_waves_cover_exactly_the_view(tmp_path: Path) -> None:
    clip = write_tone_clips(tmp_path, 1, seconds=(1.0, 1.0))[0]
    frontend = Frontend(FrontendConfig())
    features = frontend.from_file(clip)                   # 98 frames
    dataset = CropViewsDataset([clip], FrontendConfig(), 160, 2, seed=3, crop_mode="loop", waves=True)
    sample = dataset[(0, 0)]
    starts = crop_spans(features.shape[0], 160, 2, "loop", np.random.default_rng([3, 0, 0]))
    for view, start in zip(sample["views"][:, 0], starts):
        torch.testing.assert_close(view, features[(int(start) + torch.arange(160)) % features.shape[0]])
    cfg = frontend.config
    assert sample["waves"].shape == (2, 159 * cfg.hop_samples + cfg.window_samples)
    random = CropViewsDataset([clip], FrontendConfig(), 48, 2, seed=1, waves=True)[(0, 0)]
    for view, wave in zip(random["views"][:, 0], random["waves"]):   # the crop's own frames, recomputed
        torch.testing.assert_close(frontend(wave), view, atol=2e-3, rtol=0)


def test_objective_needs_are_checked_before_reading_data() -> None:
    with pytest.raises(AsitError, match=r"objective supmam trains on 1 view\(s\) per clip; set data.num_views: 1"):
        check_data_needs(DataConfig(num_views=2), DataNeeds(num_views=1), "supmam")
    with pytest.raises(AsitError, match=r"objective supmam trains on clip labels; set data.labels: true"):
        check_data_needs(DataConfig(num_views=1), DataNeeds(num_views=1, labels=True), "supmam")
    with pytest.raises(AsitError, match=r"data.crop_mode must be one of random, loop, none, got 'wrap'"):
        DataConfig(crop_mode="wrap").check()
