"""The dev sets' tables (catalog.yaml) as typed, validated objects.

Everything that says *what* goes into a set — classes and their files, speakers, words, voices, backgrounds,
sizes and levels — lives in the YAML file; the writers only say *how*. A test (or a user) can pass another catalog
file with the same schema: that is how the tests build the sets from a few fake files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from upstream.errors import AsitError

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
ENGINES: tuple[str, ...] = ("espeak-ng", "flite", "festival")
SC_SPLITS: tuple[str, ...] = ("training", "validation", "testing")


@dataclass(frozen=True)
class FileSet:
    """Glob patterns per Debian package, and patterns to leave out."""

    patterns: dict[str, tuple[str, ...]]
    exclude: tuple[str, ...] = ()

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(self.patterns)


@dataclass(frozen=True)
class EscClass:
    name: str
    files: FileSet
    esc10: bool = False
    repeat: tuple[int, int] | None = None          # place one short recording this many times (footsteps)
    repeat_gap_s: tuple[float, float] = (0.35, 0.75)


@dataclass(frozen=True)
class EscConfig:
    classes: tuple[EscClass, ...]
    sample_rate: int = 44100
    clip_seconds: float = 5.0
    clips_per_class: int = 20
    folds: int = 5
    band_limit_rate: int | None = 11025
    background_snr_db: tuple[float, float] = (25.0, 40.0)
    peak: tuple[float, float] = (0.3, 0.9)


@dataclass(frozen=True)
class VoxSpeaker:
    name: str
    files: FileSet


@dataclass(frozen=True)
class VoxConfig:
    speakers: tuple[VoxSpeaker, ...]
    sample_rate: int = 16000
    utterances_per_speaker: int = 10
    split_counts: dict[int, int] = field(default_factory=lambda: {2: 2, 3: 2})
    videos_per_speaker: int = 3
    utterance_seconds: tuple[float, float] = (3.0, 6.0)
    gap_s: tuple[float, float] = (0.12, 0.35)
    item_seconds: tuple[float, float] = (0.25, 6.0)
    channel_tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)
    channel_snr_db: tuple[float, float] = (20.0, 35.0)
    peak: tuple[float, float] = (0.3, 0.9)


@dataclass(frozen=True)
class VoiceSpec:
    """A TTS voice (`engine` + `voice`), or `count` espeak-ng speakers drawn from the corpus's voice pool."""

    engine: str
    voice: str | None = None
    count: int = 1
    package: str | None = None     # the apt package that ships the voice (festival voices), for error messages


@dataclass(frozen=True)
class Background:
    name: str
    package: str
    file: str


@dataclass(frozen=True)
class ScConfig:
    words: tuple[str, ...]
    voices: tuple[VoiceSpec, ...]
    backgrounds: tuple[Background, ...]
    sample_rate: int = 16000
    takes: tuple[int, int] = (1, 2)
    snr_db: tuple[float, float] = (5.0, 30.0)
    peak: tuple[float, float] = (0.2, 0.9)
    split_fractions: dict[str, float] = field(
        default_factory=lambda: {"training": 0.7, "validation": 0.15, "testing": 0.15})
    background_max_seconds: float = 60.0
    synthetic_noise: tuple[str, ...] = ("white_noise", "pink_noise")


@dataclass(frozen=True)
class Catalog:
    esc50: EscConfig
    voxceleb1: VoxConfig
    speechcommands: ScConfig
    source: Path

    def packages(self) -> list[str]:
        """Every Debian package whose files a set reads."""
        names = {p for c in self.esc50.classes for p in c.files.packages}
        names |= {p for s in self.voxceleb1.speakers for p in s.files.packages}
        names |= {b.package for b in self.speechcommands.backgrounds}
        return sorted(names)

    def engines(self) -> list[str]:
        return sorted({v.engine for v in self.speechcommands.voices})


# ---------------------------------------------------------------------------------------------- loading


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Parse and check a catalog file (default: the one shipped next to this module)."""
    path = Path(path) if path is not None else DEFAULT_CATALOG
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise AsitError(f"cannot read the dev-set catalog {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise AsitError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise AsitError(f"{path}: expected a mapping with esc50, voxceleb1 and speechcommands")
    ctx = _Ctx(path)
    return Catalog(esc50=_esc(ctx, ctx.section(raw, "esc50")), voxceleb1=_vox(ctx, ctx.section(raw, "voxceleb1")),
                   speechcommands=_sc(ctx, ctx.section(raw, "speechcommands")), source=path)


class _Ctx:
    """Error messages that name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> AsitError:
        return AsitError(f"{self.path}: {where}: {what}")

    def section(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "missing or not a mapping")
        return value

    def pair(self, raw: dict[str, Any], key: str, where: str, default: tuple[float, float],
             kind: type = float) -> Any:
        value = raw.get(key, default)
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) for v in value) or value[0] > value[1]):
            raise self.fail(f"{where}.{key}", f"expected [low, high], got {value!r}")
        return (kind(value[0]), kind(value[1]))

    def positive(self, raw: dict[str, Any], key: str, where: str, default: Any, kind: type = int) -> Any:
        value = raw.get(key, default)
        if not isinstance(value, (int, float)) or value <= 0:
            raise self.fail(f"{where}.{key}", f"expected a positive number, got {value!r}")
        return kind(value)

    def files(self, raw: dict[str, Any], where: str) -> FileSet:
        files = raw.get("files")
        if not isinstance(files, dict) or not files:
            raise self.fail(f"{where}.files", "expected {package: [glob, ...]}")
        patterns: dict[str, tuple[str, ...]] = {}
        for package, globs in files.items():
            globs = [globs] if isinstance(globs, str) else globs
            if not isinstance(globs, list) or not globs or not all(isinstance(g, str) and g for g in globs):
                raise self.fail(f"{where}.files.{package}", "expected a list of glob patterns")
            bad = [g for g in globs if g.startswith("/") or ".." in Path(g).parts]
            if bad:
                raise self.fail(f"{where}.files.{package}", f"patterns must be relative to the package root: {bad}")
            patterns[str(package)] = tuple(globs)
        exclude = raw.get("exclude", [])
        if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
            raise self.fail(f"{where}.exclude", "expected a list of patterns")
        return FileSet(patterns, tuple(exclude))

    def name(self, raw: Any, where: str, taken: set[str]) -> str:
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise self.fail(where, f"needs a name made of letters, digits, '-' and '_', got {name!r}")
        if name in taken:
            raise self.fail(where, f"name {name!r} is used twice")
        taken.add(name)
        return name


def _esc(ctx: _Ctx, raw: dict[str, Any]) -> EscConfig:
    classes, taken = [], set()
    for i, item in enumerate(raw.get("classes") or []):
        where = f"esc50.classes[{i}]"
        name = ctx.name(item, where, taken)
        repeat = ctx.pair(item, "repeat", where, (1, 1), int) if "repeat" in item else None
        classes.append(EscClass(name, ctx.files(item, where), bool(item.get("esc10", False)), repeat,
                                ctx.pair(item, "repeat_gap_s", where, (0.35, 0.75))))
    if len(classes) < 2:
        raise ctx.fail("esc50.classes", "needs at least two classes")
    folds = ctx.positive(raw, "folds", "esc50", 5)
    per_class = ctx.positive(raw, "clips_per_class", "esc50", 20)
    if per_class % folds:
        raise ctx.fail("esc50.clips_per_class", f"{per_class} is not a multiple of folds ({folds})")
    band = raw.get("band_limit_rate", 11025)
    if band is not None and (not isinstance(band, int) or band < 4000):
        raise ctx.fail("esc50.band_limit_rate", f"expected a sample rate >= 4000 or null, got {band!r}")
    return EscConfig(tuple(classes), ctx.positive(raw, "sample_rate", "esc50", 44100),
                     ctx.positive(raw, "clip_seconds", "esc50", 5.0, float), per_class, folds, band,
                     ctx.pair(raw, "background_snr_db", "esc50", (25.0, 40.0)),
                     ctx.pair(raw, "peak", "esc50", (0.3, 0.9)))


def _vox(ctx: _Ctx, raw: dict[str, Any]) -> VoxConfig:
    speakers, taken = [], set()
    for i, item in enumerate(raw.get("speakers") or []):
        where = f"voxceleb1.speakers[{i}]"
        speakers.append(VoxSpeaker(ctx.name(item, where, taken), ctx.files(item, where)))
    if len(speakers) < 2:
        raise ctx.fail("voxceleb1.speakers", "needs at least two speakers")
    if len(speakers) > 1251:
        raise ctx.fail("voxceleb1.speakers", "VoxCeleb1 ids run id10001..id11251: at most 1251 speakers")
    counts = raw.get("split_counts", {2: 2, 3: 2})
    if not isinstance(counts, dict) or set(counts) - {2, 3} or not all(
            isinstance(v, int) and v >= 0 for v in counts.values()):
        raise ctx.fail("voxceleb1.split_counts", f"expected {{2: n_valid, 3: n_test}}, got {counts!r}")
    per_speaker = ctx.positive(raw, "utterances_per_speaker", "voxceleb1", 10)
    if sum(counts.values()) >= per_speaker:
        raise ctx.fail("voxceleb1.split_counts", f"leaves no training utterance out of {per_speaker}")
    videos = ctx.positive(raw, "videos_per_speaker", "voxceleb1", 3)
    return VoxConfig(tuple(speakers), ctx.positive(raw, "sample_rate", "voxceleb1", 16000), per_speaker,
                     {int(k): int(v) for k, v in counts.items()}, videos,
                     ctx.pair(raw, "utterance_seconds", "voxceleb1", (3.0, 6.0)),
                     ctx.pair(raw, "gap_s", "voxceleb1", (0.12, 0.35)),
                     ctx.pair(raw, "item_seconds", "voxceleb1", (0.25, 6.0)),
                     ctx.pair(raw, "channel_tilt_db_per_octave", "voxceleb1", (-3.0, 3.0)),
                     ctx.pair(raw, "channel_snr_db", "voxceleb1", (20.0, 35.0)),
                     ctx.pair(raw, "peak", "voxceleb1", (0.3, 0.9)))


def _sc(ctx: _Ctx, raw: dict[str, Any]) -> ScConfig:
    words = raw.get("words")
    if (not isinstance(words, list) or not words or len(set(words)) != len(words)
            or not all(isinstance(w, str) and w.isalpha() and w.islower() for w in words)):
        raise ctx.fail("speechcommands.words", f"expected distinct lower-case words (quote yes/no/on/off: YAML "
                                               f"reads them as booleans), got {words!r}")
    voices = []
    for i, item in enumerate(raw.get("voices") or []):
        where = f"speechcommands.voices[{i}]"
        if not isinstance(item, dict) or item.get("engine") not in ENGINES:
            raise ctx.fail(where, f"engine must be one of {', '.join(ENGINES)}")
        if item["engine"] == "espeak-ng" and "voice" not in item:
            voices.append(VoiceSpec("espeak-ng", None, ctx.positive(item, "count", where, 1)))
        elif isinstance(item.get("voice"), str) and item["voice"]:
            voices.append(VoiceSpec(item["engine"], item["voice"], 1, item.get("package")))
        else:
            raise ctx.fail(where, "needs a voice name (or, for espeak-ng, a count)")
    if sum(v.count for v in voices) < 3:
        raise ctx.fail("speechcommands.voices", "needs at least three speakers (one per split)")
    backgrounds, taken = [], set(raw.get("synthetic_noise", ["white_noise", "pink_noise"]))
    for i, item in enumerate(raw.get("backgrounds") or []):
        where = f"speechcommands.backgrounds[{i}]"
        name = ctx.name(item, where, taken)
        if not isinstance(item.get("package"), str) or not isinstance(item.get("file"), str):
            raise ctx.fail(where, "needs package and file")
        backgrounds.append(Background(name, item["package"], item["file"]))
    noise = tuple(raw.get("synthetic_noise", ["white_noise", "pink_noise"]))
    unknown = sorted(set(noise) - {"white_noise", "pink_noise", "brown_noise"})
    if unknown:
        raise ctx.fail("speechcommands.synthetic_noise", f"unknown noise(s) {unknown}")
    if not backgrounds and not noise:
        raise ctx.fail("speechcommands", "needs at least one background")
    fractions = raw.get("split_fractions", {"training": 0.7, "validation": 0.15, "testing": 0.15})
    if (not isinstance(fractions, dict) or set(fractions) != set(SC_SPLITS)
            or not all(isinstance(v, (int, float)) and v > 0 for v in fractions.values())):
        raise ctx.fail("speechcommands.split_fractions", f"expected positive {', '.join(SC_SPLITS)}")
    return ScConfig(tuple(words), tuple(voices), tuple(backgrounds),
                    ctx.positive(raw, "sample_rate", "speechcommands", 16000),
                    ctx.pair(raw, "takes", "speechcommands", (1, 2), int),
                    ctx.pair(raw, "snr_db", "speechcommands", (5.0, 30.0)),
                    ctx.pair(raw, "peak", "speechcommands", (0.2, 0.9)),
                    {k: float(v) for k, v in fractions.items()},
                    ctx.positive(raw, "background_max_seconds", "speechcommands", 60.0, float), noise)
