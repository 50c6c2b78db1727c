"""Real-audio dev sets (tasks/devsets): built from a small fake package folder this file writes, then read back with
the project's own readers. No network, no apt: the fake packages stand where `apt-get download` would put them."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.corpus.speechcommands import which_set
from tasks.datasets import read_esc50, read_speechcommands, read_voxceleb1
from tasks.devsets import MANIFEST, build_devsets, content_hash, is_up_to_date, load_catalog, read_manifest
from tasks.devsets import sources as devsources
from tasks.devsets.speechcommands import deal_splits
from upstream.cli import main
from upstream.errors import AsitError

pytestmark = pytest.mark.e2e
SC_NAME_SPLIT = {"training": "train", "validation": "valid", "testing": "test"}
HAVE_FFMPEG = shutil.which("ffmpeg") is not None

# The fake packages: file names shaped like the real ones (games' sound folders, per-language speech folders).
SFX, SPEECH = "fake-sfx-data", "fake-speech-data"
SFX_DIR = "usr/share/games/fakegame/sounds"
SPEECH_DIR = "usr/share/fakespeech/sounds"


def catalog_text(missing_package: str | None = None) -> str:
    """A catalog with the real schema, scaled down: 3 classes x 10 clips, 4 speakers, 3 words x 5 voices."""
    extra = f"\n        {missing_package}: [usr/share/nothing/*.wav]" if missing_package else ""
    g722 = f'["{SPEECH_DIR}/de/*.g722"]' if HAVE_FFMPEG else f'["{SPEECH_DIR}/de/*.ogg"]'
    return f"""
esc50:
  clips_per_class: 10
  folds: 5
  classes:
    - name: explosion
      files:
        {SFX}: ["{SFX_DIR}/explosion*.wav", "{SFX_DIR}/boom*.flac"]{extra}
    - name: birds
      esc10: true
      files:
        {SFX}: ["{SFX_DIR}/birds/*.ogg"]
    - name: footsteps
      repeat: [3, 6]
      files:
        {SFX}: ["{SFX_DIR}/*_footstep.*.ogg"]
      exclude: ["*water_footstep*"]
voxceleb1:
  utterances_per_speaker: 6
  split_counts: {{2: 1, 3: 1}}
  videos_per_speaker: 2
  utterance_seconds: [1.5, 2.5]
  item_seconds: [0.2, 2.0]
  speakers:
    - {{name: fake-en, files: {{{SPEECH}: ["{SPEECH_DIR}/en/*.ogg"]}}}}
    - {{name: fake-fr, files: {{{SPEECH}: ["{SPEECH_DIR}/fr/*.wav"]}}}}
    - {{name: fake-de, files: {{{SPEECH}: {g722}}}}}
    - name: fake-it
      files: {{{SPEECH}: ["{SPEECH_DIR}/it/**/*.ogg"]}}
      exclude: ["*/silence/*"]
speechcommands:
  words: ["yes", "no", "stop"]
  takes: [1, 2]
  split_fractions: {{training: 0.6, validation: 0.2, testing: 0.2}}
  background_max_seconds: 3
  synthetic_noise: [white_noise]
  backgrounds:
    - {{name: rain, package: {SFX}, file: {SFX_DIR}/ambience/rain.ogg}}
  voices:
    - {{engine: espeak-ng, count: 5}}
"""


# ------------------------------------------------------------------------------------------- fake packages


def _event(rng: np.random.Generator, kind: str, seconds: float, rate: int) -> np.ndarray:
    """Distinct little sounds per kind: decaying noise (explosion), chirps (birds), a click (footstep)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    if kind == "explosion" and seconds > 5:   # a long rumble: cropped, not placed
        out = rng.standard_normal(n) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    elif kind == "explosion":
        out = rng.standard_normal(n) * np.exp(-t / rng.uniform(0.2, 0.8))
    elif kind == "birds":
        f0 = rng.uniform(2000, 4000)
        out = np.sin(2 * np.pi * (f0 * t + rng.uniform(500, 1500) * t ** 2)) * (np.sin(2 * np.pi * 6 * t) > 0)
    else:
        out = rng.standard_normal(n) * np.exp(-t / 0.02)
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def _word(rng: np.random.Generator, f0: float, rate: int) -> np.ndarray:
    """A vowel-like harmonic tone (speaker pitch f0) with silence around it, as a recorded word has."""
    n = int(rng.uniform(0.3, 0.7) * rate)
    t = np.arange(n) / rate
    tone = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6))
    tone = tone * np.hanning(n)
    pad = np.zeros(int(0.15 * rate))
    return (0.4 * np.concatenate([pad, tone / np.max(np.abs(tone)), pad])).astype(np.float32)


def write_fake_sources(root: Path) -> Path:
    """`<root>/<package>/usr/share/...` trees, as `asit devsets` leaves them after apt-get download + dpkg-deb."""
    rng = np.random.default_rng(1234)
    sfx = root / SFX / SFX_DIR
    for k in range(6):   # explosions: two long recordings (cropped), four short ones (placed)
        seconds = 7.0 if k < 2 else rng.uniform(0.5, 2.0)
        suffix, rate = ("wav", 22050) if k % 2 == 0 else ("flac", 44100)
        path = sfx / (f"explosion{k}.{suffix}" if suffix == "wav" else f"boom{k}.{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), _event(rng, "explosion", seconds, rate), rate)
    shutil.copy(sfx / "explosion0.wav", sfx / "explosion_copy.wav")   # same bytes twice: one source
    (sfx / "birds").mkdir()
    for k in range(5):
        sf.write(str(sfx / "birds" / f"chirp{k}.ogg"), _event(rng, "birds", rng.uniform(0.4, 1.5), 44100), 44100)
    for k, ground in enumerate(["wood", "gravel", "snow", "sand", "metal", "water"]):
        sf.write(str(sfx / f"default_{ground}_footstep.{k}.ogg"), _event(rng, "footsteps", 0.25, 48000), 48000)
    (sfx / "ambience").mkdir()
    sf.write(str(sfx / "ambience" / "rain.ogg"), (0.1 * rng.standard_normal(4 * 22050)).astype(np.float32), 22050)
    stamp = {"package": SFX, "version": "1.0-1"}
    (root / SFX / devsources.STAMP).write_text(json.dumps(stamp))

    speech = root / SPEECH / SPEECH_DIR
    for lang, f0, suffix, rate in (("en", 110.0, "ogg", 44100), ("fr", 210.0, "wav", 22050),
                                   ("de", 150.0, "g722" if HAVE_FFMPEG else "ogg", 16000),
                                   ("it", 260.0, "ogg", 48000)):
        folder = speech / lang / ("alpha" if lang == "it" else "")
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(24):
            word = _word(rng, f0 * rng.uniform(0.95, 1.05), rate)
            if suffix == "g722":
                pcm = (word * 32767).astype("<i2").tobytes()
                subprocess.run(["ffmpeg", "-v", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-", "-c:a",
                                "g722", "-f", "g722", "-y", str(folder / f"w{k:02d}.g722")], input=pcm, check=True)
            else:
                sf.write(str(folder / f"w{k:02d}.{suffix}"), word, rate)
        if lang == "it":   # a silence prompt, excluded by the catalog (asterisk ships such files)
            (speech / lang / "silence").mkdir()
            sf.write(str(speech / lang / "silence" / "1.ogg"), np.zeros(8000, np.float32), 16000)
    (root / SPEECH / devsources.STAMP).write_text(json.dumps({"package": SPEECH, "version": "2:0.5-3"}))
    return root


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("devsets")
    sources = write_fake_sources(base / "sources")
    catalog = base / "catalog.yaml"
    catalog.write_text(catalog_text())
    return {"base": base, "sources": sources, "catalog": catalog}


def build(fake: dict[str, Path], out: Path, seed: int = 0, **kwargs: object) -> Path:
    build_devsets(out, seed, sources=fake["sources"], catalog=fake["catalog"], download=False, use_system=False,
                  **kwargs)  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def built(fake: dict[str, Path]) -> Path:
    return build(fake, fake["base"] / "out")


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def assert_wav(path: Path, rate: int, frames: int | None = None) -> None:
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 1, rate), path
    if frames is not None:
        assert info.frames == frames, path


# ------------------------------------------------------------------------------------------------ ESC-50


def test_esc50_layout_folds_and_sources(built: Path) -> None:
    index = read_esc50(built / "ESC-50-master")
    assert index.labels == ["explosion", "birds", "footsteps"]
    per = Counter((e.labels[0], e.fold) for e in index.examples)
    assert set(per.values()) == {2} and len(per) == 3 * 5            # 2 clips per class per fold
    folds_of = defaultdict(set)
    for e in index.examples:
        folds_of[e.group].add(e.fold)
        assert_wav(e.path, 44100, 5 * 44100)
    assert all(len(f) == 1 for f in folds_of.values())                # a source file never spans folds
    rows = list(csv.DictReader((built / "ESC-50-master/meta/esc50.csv").open()))
    assert list(rows[0]) == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    assert {r["esc10"] for r in rows if r["category"] == "birds"} == {"True"}
    assert [r["filename"] for r in rows] == sorted(r["filename"] for r in rows)
    # the explosion class has 7 files but 6 distinct recordings (a byte-identical copy counts once): 10 clips
    # from 6 sources means some second takes, which must come from the same fold
    explosion = [r for r in rows if r["category"] == "explosion"]
    assert len({r["src_file"] for r in explosion}) == 6 and {r["take"] for r in explosion} == {"A", "B"}
    placements = {r["filename"]: r for r in csv.DictReader((built / "ESC-50-master/meta/devsets_sources.csv").open())}
    assert set(placements) == {r["filename"] for r in rows}
    used = Counter((r["category"], r["placement"]) for r in placements.values())
    assert used[("footsteps", "repeated")] == 10 and used[("explosion", "cropped")] > 0
    assert used[("explosion", "placed")] > 0 and used[("birds", "placed")] == 10
    assert not any("water_footstep" in r["source"] for r in placements.values())   # excluded by the catalog


def test_esc50_takes_of_long_source_differ(built: Path) -> None:
    rows = list(csv.DictReader((built / "ESC-50-master/meta/devsets_sources.csv").open()))
    cropped = [r for r in rows if r["placement"] == "cropped"]
    by_source = defaultdict(list)
    for r in cropped:
        by_source[r["source"]].append(r["filename"])
    pairs = [names for names in by_source.values() if len(names) > 1]
    assert pairs, "a 7 s source should give two cropped takes"
    a, b = (sf.read(str(built / "ESC-50-master/audio" / n))[0] for n in pairs[0][:2])
    assert not np.allclose(a, b)


# ---------------------------------------------------------------------------------------------- VoxCeleb1


def test_voxceleb1_layout_and_splits(built: Path) -> None:
    index = read_voxceleb1(built / "VoxCeleb1")
    assert index.labels == ["id10001", "id10002", "id10003", "id10004"]
    per_speaker = defaultdict(Counter)
    videos = defaultdict(set)
    for e in index.examples:
        per_speaker[e.labels[0]][e.split] += 1
        videos[e.labels[0]].add(e.group)
        assert_wav(e.path, 16000)
        assert 1.5 <= sf.info(str(e.path)).duration <= 2.5 + 0.6 + 0.35   # + lead-in/tail and a pause
    assert all(c["valid"] == 1 and c["test"] == 1 and c["train"] >= 1 for c in per_speaker.values())
    assert all(len(v) == 2 for v in videos.values())
    rows = list(csv.DictReader((built / "VoxCeleb1/devsets_sources.csv").open()))
    recordings = [rec for r in rows for rec in r["recordings"].split(";")]
    assert len(recordings) == len(set(recordings))                    # no recording in two utterances
    assert not any("/silence/" in rec for rec in recordings)
    lines = (built / "VoxCeleb1/iden_split.txt").read_text().splitlines()
    assert lines == sorted(lines, key=lambda line: line.split()[1]) and len(lines) == len(index.examples)
    assert {r["speaker"] for r in rows} == {"fake-en", "fake-fr", "fake-de", "fake-it"}
    # a speaker's utterances all come from its own recordings
    assert all(f"/{r['speaker'].split('-')[1]}/" in r["recordings"] for r in rows)


# ------------------------------------------------------------------------------------------ Speech Commands


def test_speechcommands_layout_and_speaker_disjoint_splits(built: Path) -> None:
    root = built / "speech_commands_v0.02"
    index = read_speechcommands(root, "v2")
    assert index.labels == ["no", "stop", "yes"]
    speakers = defaultdict(set)
    for e in index.examples:
        speakers[e.split].add(e.group)
        assert_wav(e.path, 16000, 16000)
        assert SC_NAME_SPLIT[which_set(e.path.name)] == e.split       # the lists agree with the real hash rule
    assert all(speakers[s] for s in ("train", "valid", "test"))
    assert not (speakers["train"] & speakers["valid"] or speakers["train"] & speakers["test"]
                or speakers["valid"] & speakers["test"])
    assert sum(len(s) for s in speakers.values()) == 5
    noise = sorted(p.name for p in (root / "_background_noise_").glob("*.wav"))
    assert noise == ["rain.wav", "white_noise.wav"]
    assert sf.info(str(root / "_background_noise_/rain.wav")).duration == pytest.approx(3.0)
    rows = list(csv.DictReader((root / "devsets_sources.csv").open()))
    assert len(rows) == len(index.examples) and {r["engine"] for r in rows} == {"espeak-ng"}
    assert len({r["voice"] for r in rows}) == 5                      # five distinct espeak-ng accent+variant pairs


def test_deal_splits_spreads_every_split() -> None:
    dealt = deal_splits(30, {"training": 0.7, "validation": 0.15, "testing": 0.15})
    assert Counter(dealt) == {"training": 22, "validation": 4, "testing": 4}
    assert "testing" in dealt[:8] and "validation" in dealt[:8]     # the first engine group gets every split
    assert Counter(deal_splits(3, {"training": 0.9, "validation": 0.05, "testing": 0.05})) == {
        "training": 1, "validation": 1, "testing": 1}


# ------------------------------------------------------------------------------ manifest, determinism, CLI


def test_manifest_records_seed_packages_and_hash(built: Path) -> None:
    manifest = read_manifest(built)
    assert manifest is not None and manifest["seed"] == 0
    assert manifest["packages"] == {SFX: "1.0-1", SPEECH: "2:0.5-3"}
    assert manifest["content_sha256"] == content_hash(built)
    esc = manifest["datasets"]["esc50"]
    assert esc["wav_files"] == 30 and esc["seconds"] == pytest.approx(150.0)
    assert manifest["datasets"]["speechcommands_v2"]["speakers"] == {"training": 3, "validation": 1, "testing": 1}


def test_same_seed_same_bytes_other_seed_differs(fake: dict[str, Path], built: Path) -> None:
    again = build(fake, fake["base"] / "again", seed=0, workers=1)    # thread count must not matter either
    assert file_hashes(again) == file_hashes(built)
    assert read_manifest(again)["content_sha256"] == read_manifest(built)["content_sha256"]  # type: ignore[index]
    other = build(fake, fake["base"] / "other", seed=1)
    assert read_manifest(other)["content_sha256"] != read_manifest(built)["content_sha256"]  # type: ignore[index]


def test_up_to_date_build_is_reused_and_force_rebuilds(fake: dict[str, Path], built: Path) -> None:
    stamp = (built / MANIFEST).stat().st_mtime_ns
    build(fake, built)
    assert (built / MANIFEST).stat().st_mtime_ns == stamp
    assert is_up_to_date(built, 0, load_catalog(fake["catalog"]))
    assert not is_up_to_date(built, 1, load_catalog(fake["catalog"]))


def test_missing_package_is_named(fake: dict[str, Path], tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(catalog_text(missing_package="fake-missing-data"))
    with pytest.raises(AsitError, match="fake-missing-data.*apt-get download fake-missing-data"):
        build_devsets(tmp_path / "out", sources=fake["sources"], catalog=catalog, download=False, use_system=False)
    assert not (tmp_path / "out").exists()


def test_cli_builds_and_reports_errors_in_one_line(fake: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["devsets", str(out), "--sources", str(fake["sources"]), "--catalog", str(fake["catalog"]), "--offline"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "esc50" in printed and "voxceleb1" in printed and "speechcommands_v2" in printed
    assert "3 words, 5 speakers" in printed and "content SHA-256" in printed
    assert main(args) == 0 and "already up to date" in capsys.readouterr().out
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["devsets", str(tmp_path / "busy"), "--sources", str(tmp_path / "empty"), "--catalog",
                 str(fake["catalog"]), "--offline"]) == 2
    err = capsys.readouterr().err.strip()
    assert "refusing to replace" in err and len(err.splitlines()) == 1


def test_missing_tool_names_setup_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devsources.shutil, "which", lambda tool: None if tool == "flite" else "/usr/bin/" + tool)
    with pytest.raises(AsitError, match=r"flite not found on PATH: run scripts/setup_devsets.sh .*apt-get install "
                                        r"flite"):
        devsources.require_tools(["espeak-ng", "flite"])


# ------------------------------------------------------------------------------------------------ catalog


def test_default_catalog_tables() -> None:
    catalog = load_catalog()
    assert len(catalog.esc50.classes) == 12 and catalog.esc50.clips_per_class == 20
    assert len(catalog.voxceleb1.speakers) >= 24
    assert len(catalog.speechcommands.words) == 15 and "yes" in catalog.speechcommands.words
    assert sum(v.count for v in catalog.speechcommands.voices) >= 25
    patterns = [p for c in catalog.esc50.classes for ps in c.files.patterns.values() for p in ps]
    patterns += [p for s in catalog.voxceleb1.speakers for ps in s.files.patterns.values() for p in ps]
    assert all(p.startswith("usr/share/") for p in patterns)
    assert set(catalog.engines()) == {"espeak-ng", "flite", "festival"}


def test_catalog_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(catalog_text().replace('["yes", "no", "stop"]', "[yes, no, stop]"))
    with pytest.raises(AsitError, match=r"bad\.yaml: speechcommands\.words: .*booleans"):
        load_catalog(bad)
    bad.write_text(catalog_text().replace("clips_per_class: 10", "clips_per_class: 12"))
    with pytest.raises(AsitError, match="clips_per_class: 12 is not a multiple of folds"):
        load_catalog(bad)


def test_class_with_too_few_sources_is_named(fake: dict[str, Path], tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(catalog_text().replace(f'["{SFX_DIR}/birds/*.ogg"]', f'["{SFX_DIR}/birds/chirp[01].ogg"]'))
    with pytest.raises(AsitError, match="ESC class birds has 2 source file.*at least 5"):
        build_devsets(tmp_path / "out", sources=fake["sources"], catalog=catalog, download=False, use_system=False)
