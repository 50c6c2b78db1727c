"""The frontend's cached resampler equals torchaudio.functional.resample, and the data-path benchmark writes
consistent JSON (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchaudio

from upstream.cli import main
from upstream.errors import AsitError
from upstream.frontend import (RESAMPLER_CACHE_MAX_ELEMENTS, _cached_resampler, _kernel_elements, resample,
                               resampler)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def _noise(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(3)).to(dtype)


@pytest.mark.parametrize(("orig", "target"), [(44100, 16000), (48000, 16000), (22050, 16000), (11025, 16000),
                                              (8000, 16000), (16000, 32000), (32000, 16000), (16000, 44100)])
def test_cached_resample_is_the_functional_one(orig: int, target: int) -> None:
    wave = _noise(orig // 2 + 7)          # half a second and an odd remainder: the output length is rounded up
    expected = torchaudio.functional.resample(wave, orig, target)
    ours = resample(wave, orig, target)
    assert ours.shape == expected.shape and torch.equal(ours, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_input_and_dtypes_match_too(dtype: torch.dtype) -> None:
    waves = _noise(2, 3, 4410, dtype=dtype)                                  # [..., samples], as the teachers pass
    ours = resample(waves, 44100, 16000)
    assert ours.dtype == dtype and ours.shape == (2, 3, 1600)
    assert torch.equal(ours, torchaudio.functional.resample(waves, 44100, 16000))
    torch.testing.assert_close(ours[1, 2], resample(waves[1, 2], 44100, 16000), rtol=0, atol=1e-6)  # conv1d rounding


def test_the_cache_returns_one_module_per_key() -> None:
    first = resampler(44100, 16000, torch.float32, CPU)
    assert resampler(44100, 16000, torch.float32, CPU) is first
    assert resampler(44100.0, 16000) is first and resampler(44100, 16000, device="cpu", dtype=torch.float32) is first
    assert isinstance(first, torchaudio.transforms.Resample)
    others = [resampler(48000, 16000, torch.float32, CPU), resampler(16000, 44100, torch.float32, CPU),
              resampler(44100, 16000, torch.float64, CPU)]
    assert len({id(m) for m in [first, *others]}) == 4
    assert others[2].kernel.dtype == torch.float64 and first.kernel.dtype == torch.float32
    assert _cached_resampler.cache_info().maxsize is not None                     # bounded


def test_resample_goes_through_the_cache() -> None:
    _cached_resampler.cache_clear()
    resample(_noise(4410), 44100, 16000)
    resample(_noise(2, 8820), 44100, 16000)
    info = _cached_resampler.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_same_rate_returns_the_input_itself() -> None:
    wave = _noise(1000)
    assert resample(wave, 16000, 16000) is wave
    double = wave.double()
    assert resample(double, 32000.0, 32000) is double


def test_odd_inputs_keep_torchaudios_behaviour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Integer waveforms, non-positive and non-integer rates go to torchaudio's function and fail as before; a
    rate pair with a kernel above the cap (small common divisor) is resampled without being cached."""
    with pytest.raises(TypeError):
        resample(torch.zeros(100, dtype=torch.int16), 44100, 16000)
    with pytest.raises(ValueError):
        resample(_noise(100), -1, 16000)
    with pytest.raises(Exception, match="integer"):
        resample(_noise(100), 44100.5, 16000)
    assert _kernel_elements(16000, 15999) > RESAMPLER_CACHE_MAX_ELEMENTS >= _kernel_elements(44056, 16000)
    monkeypatch.setattr("upstream.frontend.RESAMPLER_CACHE_MAX_ELEMENTS", _kernel_elements(44100, 16000) - 1)
    _cached_resampler.cache_clear()
    wave = _noise(300)
    assert torch.equal(resample(wave, 44100, 16000), torchaudio.functional.resample(wave, 44100, 16000))
    assert _cached_resampler.cache_info().currsize == 0


def test_kernel_size_formula_is_torchaudios() -> None:
    for orig, target in [(44100, 16000), (11025, 16000), (16000, 32000), (48000, 44100)]:
        assert resampler(orig, target, torch.float32, CPU).kernel.numel() == _kernel_elements(orig, target)


def test_a_kernel_built_under_inference_mode_still_serves_autograd() -> None:
    _cached_resampler.cache_clear()
    with torch.inference_mode():
        resample(_noise(4410), 44100, 16000)
    wave = _noise(4410).requires_grad_()
    resample(wave, 44100, 16000).sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all()


def test_teacher_resampling_uses_the_cache() -> None:
    from upstream.teachers import Teacher

    teacher = Teacher()
    teacher.sample_rate = 16000
    waves = _noise(2, 1600)
    assert teacher._resampled(waves, 16000) is waves
    _cached_resampler.cache_clear()
    out = teacher._resampled(waves, 32000)
    assert torch.equal(out, torchaudio.functional.resample(waves, 16000, 32000))
    assert _cached_resampler.cache_info().currsize == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cache_key_includes_the_device() -> None:
    waves = _noise(2, 44100).cuda()
    ours = resample(waves, 44100, 16000)
    assert ours.device == waves.device
    torch.testing.assert_close(ours, torchaudio.functional.resample(waves, 44100, 16000), rtol=0, atol=1e-6)
    assert resampler(44100, 16000, torch.float32, waves.device) is not resampler(44100, 16000, torch.float32, CPU)


def _check_report(report: dict, clips: int, repeats: int, seconds: float) -> None:
    from benchmarks.data_path import STAGES

    assert report["environment"]["threads"] == 1 and report["environment"]["device"] == "cpu"
    rows = report["results"]
    kinds = {(r["format"], r["sample_rate"]) for r in rows}
    assert kinds == {("wav", 44100), ("flac", 44100), ("wav", 16000), ("flac", 16000)}
    assert sorted(r["resampler"] for r in rows) == ["cached"] * 4 + ["functional"] * 4
    for row in rows:
        assert row["clips"] == clips * repeats and len(row["pass_s"]) == repeats
        assert row["seconds"] == pytest.approx(sum(row["stage_s"].values()))
        assert row["seconds"] == pytest.approx(sum(row["pass_s"]))
        assert row["clips_per_s"] == pytest.approx(row["clips"] / row["seconds"])
        assert row["audio_seconds_per_s"] == pytest.approx(row["clips_per_s"] * seconds)
        assert set(row["shares"]) == set(STAGES) and sum(row["shares"].values()) == pytest.approx(1.0)
        assert all(row["shares"][s] == pytest.approx(row["stage_s"][s] / row["seconds"]) for s in STAGES)
        assert row["target_rate"] == 16000 and row["bytes_per_clip"] > 0
    for row in (r for r in rows if r["resampler"] == "cached"):
        other = next(r for r in rows if r["resampler"] == "functional"
                     and (r["format"], r["sample_rate"]) == (row["format"], row["sample_rate"]))
        ratios = row["vs_functional"]
        assert ratios["clips_per_s_ratio"] == pytest.approx(row["clips_per_s"] / other["clips_per_s"])
        if row["sample_rate"] == 16000:
            assert ratios["resample_s_ratio"] is None
        else:
            expected = other["stage_s"]["resample"] / row["stage_s"]["resample"]
            assert ratios["resample_s_ratio"] == pytest.approx(expected)


def test_data_path_bench_writes_consistent_json(tmp_path: Path) -> None:
    from benchmarks.data_path import run_data_path

    before = torch.get_num_threads()
    report = run_data_path(tmp_path / "data.json", seconds=0.3, clips=2, repeats=2)
    assert torch.get_num_threads() == before                                  # the caller's thread count is back
    assert json.loads((tmp_path / "data.json").read_text()) == report
    _check_report(report, clips=2, repeats=2, seconds=0.3)
    assert not list(tmp_path.glob("*.tmp"))


def test_asit_perf_benches_data(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    assert main(["perf", "--benches", "data", "--seconds", "0.2", "--data-clips", "1", "--repeats", "1",
                 "--out", str(out)]) == 0
    _check_report(json.loads(out.read_text()), clips=1, repeats=1, seconds=0.2)
    assert main(["perf", "--benches", "data", "inference", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_synthetic_clips_are_not_trivial() -> None:
    from benchmarks.data_path import synthetic_clip

    clip = synthetic_clip(0.5, 44100, seed=0)
    spectrum = torch.fft.rfft(torch.from_numpy(clip)).abs()
    band = spectrum.shape[0]
    assert clip.dtype.name == "float32" and abs(float(abs(clip).max()) - 0.8) < 1e-6
    assert spectrum[: band // 4].sum() > 0 and spectrum[band // 2:].sum() > 0.01 * spectrum.sum()
    assert not torch.equal(torch.from_numpy(synthetic_clip(0.5, 44100, 1)), torch.from_numpy(clip))


def test_data_path_refuses_empty_settings(tmp_path: Path) -> None:
    from benchmarks.data_path import run_data_path

    with pytest.raises(AsitError, match="positive"):
        run_data_path(tmp_path / "x.json", seconds=0.0)
