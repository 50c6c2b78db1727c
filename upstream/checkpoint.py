"""Encoder files: our exported format (a torch file or a safetensors file), our Lightning checkpoints, and official
ASiT checkpoints, loaded into the registered encoder of their `arch` (upstream.encoders) with the frontend
configuration the weights expect.

Torch files are read with `torch.load(weights_only=True)`. Official ASiT checkpoints pickle an argparse.Namespace
(`args`); it is allow-listed (torch.serialization.safe_globals), so the file's tensors load without executing
arbitrary pickled code. Safetensors files hold no code at all: tensors, and string metadata that exports use for
their configs (JSON). A file is read as safetensors when its name ends in `.safetensors` or its first bytes are a
safetensors header, whatever its name; anything else is read as a torch file.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import pickle
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from .atomic import atomic_write
from .encoders import ARCHS, VIT_SIZES, AudioEncoder, AudioViT, EncoderConfig, build_encoder
from .errors import AsitError, cause
from .frontend import FrontendConfig

EXPORT_FORMAT = "asit-hear/encoder"
EXPORT_VERSION = 2            # 2: the encoder's `arch` is stored (version 1 files are ViTs)
READABLE_VERSIONS = (1, 2)
# The official code computes its fbank at 32 kHz (data_transformations.SAMPLE_RATE) while the paper says 16 kHz.
OFFICIAL_SAMPLE_RATE = 32000
_BACKBONE_PREFIXES = ("module.", "backbone.", "encoder.")
# how an export is written: a torch file (weights_only-loadable dict) or a safetensors file (configs in its metadata)
FILE_FORMATS = ("pt", "safetensors")
SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
# metadata entries of a safetensors export holding JSON (the others are plain strings: format, version, arch)
_JSON_METADATA = ("encoder", "frontend", "meta")
_MAX_SAFETENSORS_HEADER = 100 * 2**20    # the safetensors library refuses larger headers


@dataclass
class LoadedEncoder:
    encoder: AudioEncoder
    frontend: FrontendConfig
    source: str                       # "export" | "lightning" | "official" | "state_dict"
    meta: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | Path, expected: str = "a readable torch file") -> Any:
    """torch.load with weights_only=True, failing with a one-line error that names the file (and says it is not
    `expected`, when torch cannot parse it)."""
    path = Path(path)
    if path.is_dir():
        inside = ", ".join(sorted(p.name for p in [*path.glob("*.pt"), *path.glob("*.safetensors")])[:3] + sorted(
            str(p.relative_to(path)) for p in path.glob("checkpoints/*.ckpt"))[:3])
        raise AsitError(f"checkpoint {path} is a directory, not a file"
                        + (f" (it holds {inside})" if inside else ""))
    if not path.is_file():
        raise AsitError(f"checkpoint {path} does not exist")
    try:
        # torch's safe_globals context removes its classes on exit even when they were allow-listed before it
        # (the s3prl launcher allow-lists Namespace for the whole process), so it is entered only when needed
        if argparse.Namespace in torch.serialization.get_safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it pickles {blocked.group(1)}, which is not allow-listed)" if blocked else ""
        raise AsitError(f"checkpoint {path} cannot be loaded safely with weights_only=True{what}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, … for files it cannot parse
        raise AsitError(f"checkpoint {path} is not {expected} ({cause(exc)})") from None


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save through `atomic_write`, serialised in memory first: torch's zip writer turns a failing write (a
    full disk) into a RuntimeError about stream positions, whereas a plain write keeps the OSError that
    `atomic_write` reports as `cannot write PATH: No space left on device`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as handle:
        handle.write(buffer.getbuffer())


def export_file_format(path: str | Path, requested: str | None = None, what: str = "format") -> str:
    """The format an export at `path` is written in: `requested` when given, else by the name (`.safetensors` ->
    safetensors, any other -> pt), so that the name never misleads a reader. A `requested` format that contradicts
    the name (pt for a .safetensors file, safetensors for a .pt/.pth/.ckpt file) is refused; `what` names the
    argument in the message (the CLI's `--format`)."""
    suffix = Path(path).suffix.lower()
    by_name = "safetensors" if suffix == SAFETENSORS_SUFFIX else "pt"
    if requested is None:
        return by_name
    if requested not in FILE_FORMATS:
        raise AsitError(f"{what} must be one of {', '.join(FILE_FORMATS)}, got {requested!r}")
    if (requested == "pt" and suffix == SAFETENSORS_SUFFIX) or (requested == "safetensors" and
                                                                 suffix in TORCH_SUFFIXES):
        fitting = SAFETENSORS_SUFFIX if requested == "safetensors" else ".pt"
        raise AsitError(f"{what} {requested} contradicts the name {path} (a {suffix} file is written as "
                        f"{by_name}); give e.g. {Path(path).with_suffix(fitting)}, or leave {what} out")
    return requested


def _json_text(path: Path, key: str, value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise AsitError(f"cannot write {path}: its {key} holds a value JSON cannot store ({exc})") from None


def _safetensors_export(path: Path, payload: Mapping[str, Any]) -> bytes:
    """A safetensors file of `payload` (the dict a .pt export holds): the state dict as tensors; format, version and
    arch as strings, and the encoder config, frontend config and meta as JSON strings in its metadata."""
    metadata = {"format": str(payload["format"]), "version": str(payload["version"]), "arch": str(payload["arch"])}
    metadata.update({key: _json_text(path, key, payload[key]) for key in _JSON_METADATA})
    # safetensors stores contiguous tensors that share no memory: the clones of save_encoder, made contiguous
    tensors = {k: v.contiguous() for k, v in payload["state_dict"].items()}
    return safetensors_bytes(tensors, metadata=metadata)


def save_encoder(path: str | Path, encoder: AudioEncoder, frontend: FrontendConfig,
                 meta: Mapping[str, Any] | None = None, file_format: str | None = None) -> Path:
    """Write weights + everything needed to rebuild encoder and frontend, atomically, in `file_format` (default: by
    the name, `export_file_format`): a torch file loadable with weights_only=True, or a safetensors file."""
    path = Path(path)
    file_format = export_file_format(path, file_format)
    payload = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "arch": encoder.arch,
        "encoder": dataclasses.asdict(encoder.config),
        "frontend": dataclasses.asdict(frontend),
        "state_dict": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
        "meta": dict(meta or {}),
    }
    if file_format == "safetensors":
        data = _safetensors_export(path, payload)
        with atomic_write(path) as handle:
            handle.write(data)
    else:
        _atomic_save(payload, path)
    return path


def is_safetensors(path: str | Path) -> bool:
    """Whether `path` is read as a safetensors file: its name ends in `.safetensors`, or it starts with a
    safetensors header (an 8-byte little-endian length that fits in the file, then a JSON object), so a renamed
    export is still recognised. Torch files never start so (a zip archive's `PK`, a legacy pickle's protocol byte)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= min(size - 8, _MAX_SAFETENSORS_HEADER)


def read_safetensors(path: str | Path) -> dict[str, Any]:
    """A safetensors file as the dict `load_encoder` dispatches on: an asit-hear export's metadata (format, version,
    arch, and the JSON-decoded encoder, frontend and meta) with its tensors as `state_dict`; any other safetensors
    file as its bare tensors. Fails with a one-line error that names the file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # the library raises SafetensorError (and OSError) for files it cannot parse
        raise AsitError(f"checkpoint {path} is not a readable safetensors file ({cause(exc)})") from None
    if metadata.get("format") != EXPORT_FORMAT:
        return tensors
    data: dict[str, Any] = {"format": EXPORT_FORMAT, "state_dict": tensors}
    version = metadata.get("version", "")
    data["version"] = int(version) if version.isdigit() else version
    if "arch" in metadata:
        data["arch"] = metadata["arch"]
    for key in _JSON_METADATA:
        if key not in metadata:
            continue              # _from_export names a missing entry
        try:
            data[key] = json.loads(metadata[key])
        except ValueError as exc:
            raise AsitError(f"checkpoint {path}: its '{key}' metadata is not JSON ({exc})") from None
        if not isinstance(data[key], dict):
            raise AsitError(f"checkpoint {path}: its '{key}' metadata is JSON {type(data[key]).__name__}, not an "
                            "object")
    return data


def read_encoder_file(path: str | Path) -> Any:
    """What `load_encoder` dispatches on: `read_safetensors` for a safetensors file (`is_safetensors`), else the
    torch file (`read_checkpoint`)."""
    if is_safetensors(path):
        return read_safetensors(path)
    return read_checkpoint(path, expected="a readable torch file or safetensors file")


def fetch_checkpoint(checkpoint: str | Path, *, progress: bool = True, check_hash: bool = False) -> Path:
    """A local path for `checkpoint`: the path itself, or for an http(s) URL the file downloaded once into torch.hub's
    cache (`<torch.hub.get_dir()>/checkpoints/<file name>`, as `torch.hub.load_state_dict_from_url` caches; a file
    already there is used as is). `check_hash` checks the download against the SHA-256 prefix in its name
    (torch.hub's `NAME-<hex>.EXT` convention)."""
    text = str(checkpoint)
    if not text.lower().startswith(("http://", "https://")):
        return Path(checkpoint)
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(text).path)).name
    if not name:
        raise AsitError(f"checkpoint URL {text} names no file")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.is_file():
        return cached
    prefix = None
    if check_hash:
        match = torch.hub.HASH_REGEX.search(name)     # torch.hub's NAME-<hex>.EXT
        if match is None:
            raise AsitError(f"checkpoint URL {text}: check_hash needs a file name NAME-<sha256 prefix>.EXT")
        prefix = match.group(1)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(text, str(cached), prefix, progress=progress)
    except Exception as exc:  # URLError, HTTPError, a hash mismatch (RuntimeError), a full disk (OSError)
        raise AsitError(f"checkpoint {text} could not be downloaded to {cached} ({cause(exc)})") from None
    return cached


def load_encoder(path: str | Path, *, which: str = "teacher", sample_rate: int | None = None,
                 frontend: FrontendConfig | None = None) -> LoadedEncoder:
    """Load any supported encoder file. `which` picks teacher/student in pretraining checkpoints;
    `frontend` (or just `sample_rate`) overrides the frontend stored in / implied by the file."""
    if which not in ("teacher", "student"):
        raise AsitError(f"which must be 'teacher' or 'student', got {which!r}")
    path = Path(path)
    data = read_encoder_file(path)
    if not isinstance(data, Mapping):
        raise AsitError(f"checkpoint {path} holds a {type(data).__name__}, not a dict of weights")
    if data.get("format") == EXPORT_FORMAT:
        loaded = _from_export(path, data)
    elif "pytorch-lightning_version" in data and "state_dict" in data:
        loaded = _from_lightning(path, data, which)
    elif "teacher" in data or "student" in data:
        loaded = _from_official(path, data, which)
    elif any(isinstance(k, str) and k.endswith("patch_embed.proj.weight") for k in data):
        loaded = _from_state_dict(path, data, "state_dict",
                                  FrontendConfig(sample_rate=OFFICIAL_SAMPLE_RATE, pad_with="silence"))
    else:
        keys = ", ".join(list(map(str, data))[:6])
        raise AsitError(f"checkpoint {path} is not an encoder export, a Lightning pretraining checkpoint or an "
                        f"official ASiT checkpoint (top-level keys: {keys})")
    if frontend is not None:
        loaded.frontend = frontend
    elif sample_rate is not None:
        loaded.frontend = dataclasses.replace(loaded.frontend, sample_rate=int(sample_rate))
    loaded.encoder.eval()
    return loaded


def _from_export(path: Path, data: Mapping[str, Any]) -> LoadedEncoder:
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        raise AsitError(f"checkpoint {path} has export version {version}; this asit-hear reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}")
    from .config import from_dict
    for key in ("encoder", "state_dict", "frontend"):
        if not isinstance(data.get(key), Mapping):
            raise AsitError(f"checkpoint {path} is an encoder export without its '{key}' entry")
    arch = data.get("arch", data["encoder"].get("arch", "vit"))
    if arch not in ARCHS:
        raise AsitError(f"checkpoint {path}: arch {arch!r} is not a registered encoder ({', '.join(ARCHS)})")
    encoder = _build(path, {**data["encoder"], "arch": arch})
    _load_strict(path, encoder, data["state_dict"])
    return LoadedEncoder(encoder, from_dict(FrontendConfig, data["frontend"], "frontend."), "export",
                         dict(data.get("meta", {})))


def _build(path: Path, config: Mapping[str, Any]) -> AudioEncoder:
    try:
        return build_encoder(config)
    except AsitError as exc:
        raise AsitError(f"checkpoint {path}: {exc}") from None


def _from_lightning(path: Path, data: Mapping[str, Any], which: str) -> LoadedEncoder:
    """Only the exported encoder is built, from the stored config, and loaded strictly from the objective's keys
    (`encoder_prefixes`): no Lightning module, no heads, no teacher files."""
    from .objectives import objective_class
    from .pretrain_config import PretrainConfig, load_pretrain_config_dict
    hparams = data.get("hyper_parameters", {})
    if "config" not in hparams:
        raise AsitError(f"checkpoint {path} is a Lightning checkpoint without an asit-hear pretraining config")
    try:
        config: PretrainConfig = load_pretrain_config_dict(hparams["config"])
        cls = objective_class(config.objective.get("name"))
    except AsitError as exc:
        raise AsitError(f"checkpoint {path}: {exc}") from None
    if which not in cls.encoder_prefixes:
        raise AsitError(f"checkpoint {path}: objective {cls.name} exports {' or '.join(cls.encoder_prefixes)}, "
                        f"not {which!r}")
    prefix = "objective." + cls.encoder_prefixes[which]
    state = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
    encoder = build_encoder(config.encoder)
    _load_strict(path, encoder, state)
    meta = {"epoch": data.get("epoch"), "global_step": data.get("global_step"), "which": which,
            "objective": config.objective.get("name")}
    return LoadedEncoder(encoder, config.frontend, "lightning", meta)


def strip_backbone_prefixes(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Keep the backbone's tensors of a DINO-style state dict, without `module.`/`backbone.` prefixes;
    projection and reconstruction heads are dropped."""
    out: dict[str, torch.Tensor] = {}
    has_backbone = any("backbone." in k for k in state)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = key
        if name.startswith("module."):
            name = name[len("module."):]
        if has_backbone:
            if not name.startswith("backbone."):
                continue  # heads (head_cls, head_recons, …)
            name = name[len("backbone."):]
        out[name] = value
    return out


def infer_encoder_config(state: Mapping[str, torch.Tensor], num_mel_bins: int = 128,
                         trained_frames: int | None = None) -> EncoderConfig:
    """Rebuild the ViT geometry from tensor shapes (heads = dim / 64, as in every ViT-S/B), given the fbank's mel bins
    and, when known, the frames it was pretrained on; refuses a positional table that does not fit them."""
    try:
        proj = state["patch_embed.proj.weight"]
        pos = state["pos_embed"]
    except KeyError as exc:
        raise AsitError(f"state dict has no {exc.args[0]}: not a ViT backbone") from None
    dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    positions = int(pos.shape[1]) - 1
    freq_patches = num_mel_bins // patch
    if num_mel_bins % patch or positions % max(freq_patches, 1):
        raise AsitError(f"pos_embed holds {positions} patch positions, which is no whole number of time rows of "
                        f"{num_mel_bins} mel bins / patch {patch}")
    time_patches = positions // freq_patches
    if trained_frames is not None and time_patches * patch != trained_frames:
        raise AsitError(f"pos_embed holds {positions} patch positions = {time_patches * patch} frames x "
                        f"{num_mel_bins} mel bins, not the {trained_frames} x {num_mel_bins} of its args")
    mlp_ratio = float(state["blocks.0.mlp.fc1.weight"].shape[0]) / dim if "blocks.0.mlp.fc1.weight" in state else 4.0
    size = next((name for name, (d, _, _) in VIT_SIZES.items() if d == dim), "base")
    return EncoderConfig(size=size, embed_dim=dim, depth=depth, num_heads=max(1, dim // 64), patch_size=patch,
                         num_mel_bins=num_mel_bins, trained_frames=time_patches * patch, mlp_ratio=mlp_ratio,
                         drop_path_rate=0.0)


def _official_int(path: Path, args: argparse.Namespace | None, name: str) -> int | None:
    value = getattr(args, name, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AsitError(f"checkpoint {path}: args.{name} must be a positive integer, got {value!r}")
    return value


def _from_official(path: Path, data: Mapping[str, Any], which: str) -> LoadedEncoder:
    """An official `main_ASiT.py` checkpoint with the input pipeline its `args` describe: fbank at 32 kHz (its
    data_transformations.SAMPLE_RATE, whatever the paper says), `args.num_mel_bins` x `args.num_frames`,
    `args.data_mean` / `args.data_std`, clips zero-padded as waveforms (so padded frames are silence)."""
    if which not in data:
        raise AsitError(f"checkpoint {path} has no '{which}' entry (it has {', '.join(map(str, data))})")
    meta: dict[str, Any] = {"which": which, "epoch": data.get("epoch")}
    args = data.get("args")
    args = args if isinstance(args, argparse.Namespace) else None
    if args is not None:
        meta["args"] = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
    mel_bins = _official_int(path, args, "num_mel_bins") or 128
    frames = _official_int(path, args, "num_frames")
    try:
        frontend = FrontendConfig(sample_rate=OFFICIAL_SAMPLE_RATE, num_mel_bins=mel_bins, pad_with="silence",
                                  **({"stats": "custom", "mean": float(args.data_mean), "std": float(args.data_std)}
                                     if args is not None and hasattr(args, "data_mean") and hasattr(args, "data_std")
                                     else {}))
    except (AsitError, TypeError, ValueError) as exc:
        raise AsitError(f"checkpoint {path}: its args give no usable fbank statistics ({exc})") from None
    return _from_state_dict(path, data[which], "official", frontend, meta, trained_frames=frames)


def _from_state_dict(path: Path, state: Mapping[str, Any], source: str, frontend: FrontendConfig,
                     meta: dict[str, Any] | None = None, trained_frames: int | None = None) -> LoadedEncoder:
    backbone = strip_backbone_prefixes(state)
    try:
        config = infer_encoder_config(backbone, frontend.num_mel_bins, trained_frames)
    except AsitError as exc:
        raise AsitError(f"checkpoint {path}: {exc}") from None
    encoder = AudioViT(config)
    _load_strict(path, encoder, backbone)
    return LoadedEncoder(encoder, frontend, source, meta or {})


def _load_strict(path: Path, encoder: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    problem = state_dict_mismatch(state, encoder.state_dict())
    if problem:
        raise AsitError(f"checkpoint {path} does not match the encoder: {problem}")
    broken = [k for k in sorted(state) if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if broken:
        raise AsitError(f"checkpoint {path} holds NaN or Inf in {', '.join(broken[:5])}"
                        + (f", … ({len(broken)} tensors in all)" if len(broken) > 5 else ""))
    encoder.load_state_dict(state, strict=True)


SHOWN = 3   # mismatching keys named in a message


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return "x".join(str(d) for d in shape) if shape is not None and len(shape) else "scalar"


def state_dict_mismatch(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """What keeps `saved` from loading strictly into a module whose state dict is `expected`, in words (None: it
    fits): keys whose shapes differ (checkpoint vs model), then keys only one side has."""
    wrong = [f"{key} {_shape(saved[key])} in the checkpoint vs {_shape(value)} in the model"
             for key, value in expected.items() if key in saved and tuple(getattr(saved[key], "shape", ())) !=
             tuple(getattr(value, "shape", ()))]
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} tensor(s) differ in shape: {'; '.join(wrong[:SHOWN])}"
                     + ("; …" if len(wrong) > SHOWN else ""))
    if missing:
        parts.append(f"it lacks {len(missing)} key(s) of the model, e.g. {', '.join(missing[:SHOWN])}")
    if unexpected:
        parts.append(f"it holds {len(unexpected)} key(s) the model does not have, e.g. "
                     f"{', '.join(unexpected[:SHOWN])}")
    return "; ".join(parts) or None


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """What a file holds, for `asit info`."""
    data = read_encoder_file(path)
    info: dict[str, Any] = {"path": str(path), "size_mb": round(Path(path).stat().st_size / 2**20, 2),
                            "format": "safetensors" if is_safetensors(path) else "torch"}
    if isinstance(data, Mapping) and "pytorch-lightning_version" in data:
        info.update(kind="lightning pretraining checkpoint", epoch=data.get("epoch"),
                    global_step=data.get("global_step"), lightning=data.get("pytorch-lightning_version"))
    loaded = load_encoder(path)
    info.setdefault("kind", {"export": "exported encoder", "official": "official ASiT checkpoint",
                             "state_dict": "bare backbone state dict"}.get(loaded.source, loaded.source))
    info.update(
        arch=loaded.encoder.arch,
        encoder=loaded.encoder.describe(),
        parameters=sum(p.numel() for p in loaded.encoder.parameters()),
        frontend=dataclasses.asdict(loaded.frontend),
        meta=loaded.meta,
    )
    return info
