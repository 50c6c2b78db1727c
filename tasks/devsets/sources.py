"""Where the real audio comes from: Debian packages, found in a cache folder, on the system, or fetched.

A *package root* is a folder laid out like `/` for one package (`<root>/usr/share/...`), so the catalog's glob
patterns (`usr/share/games/...`) work the same on a fetched copy and on an installed package. Lookup order, per
package: `<sources>/<package>/` (a previous fetch, or a folder a test wrote), then the installed system (`/`, when
dpkg says the package is installed), then — only when `download` is on — `apt-get download` + `dpkg-deb -x` into
`<sources>/<package>/`. Neither needs root. Fetched copies keep only the audio files and the copyright notice (the
.deb is deleted after extraction; its SHA-256 is kept in `.devsets-package.json`).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf
import torch
import torchaudio

from upstream.errors import AsitError

from .catalog import FileSet

STAMP = ".devsets-package.json"
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".ogg", ".oga", ".opus", ".flac", ".g722", ".gsm")
SETUP_HINT = "scripts/setup_devsets.sh"
# external program -> the Debian package that provides it (named in one-line errors)
TOOL_PACKAGES: dict[str, str] = {"espeak-ng": "espeak-ng", "sox": "sox", "ffmpeg": "ffmpeg", "flite": "flite",
                                 "text2wave": "festival", "apt-get": "apt", "dpkg-deb": "dpkg"}
# decoders for what libsndfile cannot read: raw G.722 (asterisk's wideband prompts) and raw GSM 06.10
FFMPEG_FORMATS: dict[str, str] = {".g722": "g722"}
SOX_FORMATS: dict[str, str] = {".gsm": "gsm"}


def default_sources_dir() -> Path:
    """The per-user cache (`$XDG_CACHE_HOME/asit-hear/debian-sources`): packages are fetched once per machine."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "asit-hear" / "debian-sources"


@dataclass(frozen=True)
class Package:
    """One Debian package's files, wherever they are."""

    name: str
    root: Path
    version: str
    origin: str      # "cache" (fetched earlier or written by a test), "system" (installed), "download" (just now)

    def glob(self, patterns: Iterable[str], exclude: Iterable[str] = ()) -> list[Path]:
        """Audio files matching any of `patterns` (relative to the package root), minus `exclude`, sorted."""
        excluded = tuple(exclude)
        found: set[Path] = set()
        for pattern in patterns:
            for path in self.root.glob(pattern):
                rel = path.relative_to(self.root).as_posix()
                if (path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
                        and not any(fnmatch.fnmatch(rel, ex) for ex in excluded)):
                    found.add(path)
        return sorted(found)


# ---------------------------------------------------------------------------------------------- tools


def require_tools(tools: Iterable[str]) -> None:
    """One line naming every missing program and the apt packages that provide them."""
    missing = sorted({tool for tool in tools if shutil.which(tool) is None})
    if missing:
        packages = " ".join(TOOL_PACKAGES.get(tool, tool) for tool in missing)
        raise AsitError(f"{', '.join(missing)} not found on PATH: run {SETUP_HINT} (or `sudo apt-get install "
                        f"{packages}`)")


def tool_versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions of system packages (the TTS engines and voices), for the manifest; '' when unknown."""
    return {name: _installed_version(name) or "" for name in sorted(set(packages))}


def _installed_version(name: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    done = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", name],
                          capture_output=True, text=True)
    status, _, version = done.stdout.strip().partition(" ")
    return version if done.returncode == 0 and status == "installed" and version else None


# -------------------------------------------------------------------------------------------- packages


def locate_packages(names: Iterable[str], sources: Path, download: bool = True,
                    use_system: bool = True) -> dict[str, Package]:
    """Every named package, fetched into `sources` when needed (and allowed); one error names all that are
    missing."""
    sources = Path(sources)
    found: dict[str, Package] = {}
    for name in sorted(set(names)):
        package = _cached(name, sources) or (_installed(name) if use_system else None)
        if package is not None:
            found[name] = package
    missing = sorted(set(names) - set(found))
    if missing and download:
        found.update(fetch_packages(missing, sources))
        missing = []
    if missing:
        raise AsitError(f"Debian package(s) {', '.join(missing)} not found in {sources} (nor installed): run "
                        f"`asit devsets` without --offline (it calls apt-get download; needs the Debian archive), or "
                        f"`apt-get download {' '.join(missing)}` and `dpkg-deb -x <deb> {sources}/<package>`")
    return found


def _cached(name: str, sources: Path) -> Package | None:
    root = sources / name
    if not root.is_dir():
        return None
    version = ""
    try:
        version = str(json.loads((root / STAMP).read_text()).get("version", ""))
    except (OSError, ValueError, AttributeError):
        pass
    return Package(name, root, version or "unknown", "cache")


def _installed(name: str) -> Package | None:
    version = _installed_version(name)
    return Package(name, Path("/"), version, "system") if version else None


def fetch_packages(names: list[str], sources: Path) -> dict[str, Package]:
    """One `apt-get download` for all, then `dpkg-deb -x` each into `sources/<name>/` (no root needed), keeping
    only audio and the copyright file. Each folder appears complete or not at all."""
    require_tools(["apt-get", "dpkg-deb"])
    sources.mkdir(parents=True, exist_ok=True)
    fetched: dict[str, Package] = {}
    with tempfile.TemporaryDirectory(prefix=".download.", dir=sources) as tmp:
        done = subprocess.run(["apt-get", "download", "-q", *names], cwd=tmp, capture_output=True, text=True)
        debs = {_deb_field(deb, "Package"): deb for deb in sorted(Path(tmp).glob("*.deb"))}
        if done.returncode != 0 or set(names) - set(debs):
            last = (done.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise AsitError(f"apt-get download {' '.join(names)} failed ({last}); check network access to the "
                            f"Debian archive and run `sudo apt-get update` (or {SETUP_HINT})")
        for name in names:
            deb, version = debs[name], _deb_field(debs[name], "Version")
            tree = Path(tmp) / f"{name}.tree"
            extracted = subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], capture_output=True, text=True)
            if extracted.returncode != 0:
                raise AsitError(f"dpkg-deb -x {deb.name} failed: {extracted.stderr.strip()}")
            _prune(tree)
            stamp = {"package": name, "version": version, "deb": deb.name,
                     "deb_sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}
            (tree / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
            deb.unlink()
            target = sources / name
            if target.exists():
                shutil.rmtree(target)
            tree.rename(target)
            fetched[name] = Package(name, target, version or "unknown", "download")
    return fetched


def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True).stdout.strip()


def _prune(tree: Path) -> None:
    """Keep audio and `usr/share/doc/*/copyright`: a game package is mostly graphics we never read."""
    for path in sorted(tree.rglob("*"), reverse=True):
        if path.is_symlink() or path.is_file():
            keep = path.suffix.lower() in AUDIO_SUFFIXES or (
                path.name == "copyright" and path.parent.parent.name == "doc")
            if not keep:
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


# ---------------------------------------------------------------------------------------------- audio


def decoders_needed(paths: Iterable[Path | str]) -> set[str]:
    """External programs needed to decode these files (ffmpeg for .g722, sox for .gsm)."""
    suffixes = {Path(p).suffix.lower() for p in paths}
    return ({"ffmpeg"} if suffixes & set(FFMPEG_FORMATS) else set()) | (
        {"sox"} if suffixes & set(SOX_FORMATS) else set())


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio and its rate, whatever the container (wav/ogg/opus/flac via libsndfile; raw G.722 via
    ffmpeg at 16 kHz; raw GSM via sox at 8 kHz)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in FFMPEG_FORMATS:
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-f", FFMPEG_FORMATS[suffix], "-i", str(path), "-f", "s16le",
               "-ac", "1", "-"]
        return _pcm16(_run(cmd, path)), 16000
    if suffix in SOX_FORMATS:
        cmd = ["sox", "-t", SOX_FORMATS[suffix], str(path), "-t", "raw", "-e", "signed-integer", "-b", "16", "-c",
               "1", "-"]
        return _pcm16(_run(cmd, path)), 8000
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AsitError(f"cannot decode {path}: {exc}") from exc
    return audio.mean(axis=1).astype(np.float32), int(rate)


def _run(cmd: list[str], path: Path) -> bytes:
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        raise AsitError(f"cannot decode {path}: {cmd[0]} says {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _pcm16(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


@functools.lru_cache(maxsize=32)
def _resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_rate, new_rate)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """torchaudio's sinc resampling with the kernel built once per rate pair: building it costs far more than
    applying it to a one-second recording. Not `upstream.frontend.resample`: `transforms.Resample`'s default kernel
    is computed in float64 and cast, so its output differs in the last bits from the frontend's (float32-built, as
    torchaudio's functional form on float32 audio), and the dev sets' audio is kept byte for byte."""
    if orig_rate == new_rate:
        return np.asarray(audio, dtype=np.float32)
    with torch.no_grad():
        out = _resampler(int(orig_rate), int(new_rate))(torch.from_numpy(np.ascontiguousarray(audio, np.float32)))
    return out.numpy()


@functools.lru_cache(maxsize=256)
def load(path: Path, sample_rate: int, via_rate: int | None = None) -> np.ndarray:
    """Decoded, mono, resampled to `sample_rate` (through `via_rate` first when given: a common band limit).
    Cached: one source feeds several takes. Callers must not modify the returned array."""
    audio, rate = read_audio(path)
    if via_rate is not None and via_rate < rate:
        audio, rate = resample(audio, rate, via_rate), via_rate
    out = resample(audio, rate, sample_rate)
    out.flags.writeable = False
    return out


def source_rate(path: Path) -> int:
    """The file's own sample rate (cheap for libsndfile formats)."""
    suffix = Path(path).suffix.lower()
    if suffix in FFMPEG_FORMATS:
        return 16000
    if suffix in SOX_FORMATS:
        return 8000
    return int(sf.info(str(path)).samplerate)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def unique_files(owners: Iterable[tuple[str, FileSet]], packages: dict[str, Package], kind: str
                 ) -> dict[str, list[tuple[str, Path, str]]]:
    """Each owner's (package, path, content SHA-256) matches of its file set. The same bytes found twice count once;
    under two owners (`kind`: "classes", "speakers") they are an error naming the file."""
    owner_of: dict[str, str] = {}          # content hash -> owner
    found: dict[str, list[tuple[str, Path, str]]] = {}
    for name, files in owners:
        mine: list[tuple[str, Path, str]] = []
        for package_name, patterns in files.patterns.items():
            for path in packages[package_name].glob(patterns, files.exclude):
                digest = file_sha256(path)
                if digest in owner_of:
                    if owner_of[digest] != name:
                        raise AsitError(f"{path} (or identical bytes) matches both {kind} {owner_of[digest]} and "
                                        f"{name}: fix the patterns in the catalog")
                    continue
                owner_of[digest] = name
                mine.append((package_name, path, digest))
        found[name] = mine
    return found
