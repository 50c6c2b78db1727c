"""`asit perf` on the smallest setting: the JSON it writes is internally consistent (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from upstream.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_perf_writes_consistent_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "perf.json"
    assert main(["perf", "--sizes", "tiny", "--precisions", "fp32", "--repeats", "2", "--seconds", "1",
                 "--batch", "2", "--train-batch", "2", "--train-frames", "64", "--durations", "0.5", "2",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"]
    by_bench = {r["bench"]: r for r in report["results"]}
    assert set(by_bench) == {"inference", "scaling", "pretrain_step"}
    inference = by_bench["inference"]
    assert len(inference["times_s"]) == 2 and inference["median_s"] > 0
    assert inference["clips_per_s"] == pytest.approx(2 / inference["median_s"])
    assert inference["realtime_factor"] == pytest.approx(2 * 1.0 / inference["median_s"])
    scaling = by_bench["scaling"]["rows"]
    assert [r["seconds_audio"] for r in scaling] == [0.5, 2.0]
    assert all(r["s_per_audio_s"] == pytest.approx(r["median_s"] / r["seconds_audio"]) for r in scaling)
    step = by_bench["pretrain_step"]
    assert (step["batch"], step["frames"]) == (2, 64) and step["clips_per_s"] == pytest.approx(2 / step["median_s"])
    assert not list(tmp_path.glob("*.tmp"))                       # written atomically



@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_perf_on_a_missing_gpu_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["perf", "--device", "cuda", "--out", str(tmp_path / "x.json")]) == 2
    assert "--device cuda: no CUDA device is visible" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
