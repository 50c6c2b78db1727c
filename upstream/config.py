"""Configuration as data: dataclasses loaded from YAML, with `a.b=value` command-line overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

from .errors import AsitError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).parent / "configs"


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build a (nested) dataclass, rejecting unknown keys and ill-typed values with the key's full name."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise AsitError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                        f"valid keys in {where.rstrip('.') or 'top level'}: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(hints[name], value, where + name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise AsitError(f"config key {key} must be a mapping, got {value!r}")
        return from_dict(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except AsitError as exc:
                errors.append(str(exc))
        raise AsitError(errors[0] if errors else f"config key {key}: bad value {value!r}")
    if hint is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise AsitError(f"config key {key} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise AsitError(f"config key {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise AsitError(f"config key {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AsitError(f"config key {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AsitError(f"config key {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise AsitError(f"config key {key} must be a string, got {value!r}")
        return str(value)
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`optim.lr=1e-3 trainer.devices=2` -> nested dict; values parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise AsitError(f"override {pair!r} is not of the form key.subkey=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise AsitError(f"override {pair!r}: value is not valid YAML ({exc.__class__.__name__})") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def resolve_config_path(name_or_path: str | Path, kind: str) -> Path:
    """A file path, or the name of a config shipped in upstream/configs/<kind>/ (without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / kind / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    available = sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))
    raise AsitError(f"config {str(name_or_path)!r} is neither a file nor a shipped {kind} config "
                    f"({', '.join(available)})")


def load_inheriting(name_or_path: str | Path, resolve: Callable[[str | Path], Path],
                    _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a YAML mapping, following `inherit: <name or path>` (the parent's values, overridden by this file's);
    `resolve` turns a name or path into the file (shipped configs, shipped recipes)."""
    path = resolve(name_or_path)
    if path.resolve() in _seen:
        raise AsitError(f"{path} inherits from itself")
    data = load_yaml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    return deep_merge(load_inheriting(parent, resolve, _seen + (path.resolve(),)), data)


def load_config_file(name_or_path: str | Path, kind: str) -> dict[str, Any]:
    """A shipped config of `kind` (upstream/configs/<kind>/) or a file, with `inherit:` resolved."""
    return load_inheriting(name_or_path, lambda name: resolve_config_path(name, kind))


def load_yaml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file's top-level mapping; one line naming the file (`what` says which kind) when it cannot be read,
    is not UTF-8 text (a binary file given by mistake), is not valid YAML or holds no mapping."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise AsitError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise AsitError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AsitError(f"{what} {path} is not a YAML text file (byte {exc.start} is not UTF-8: a binary file?)"
                        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AsitError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise AsitError(f"{what} {path} must hold a mapping at top level, not {type(raw).__name__}")
    return raw


__all__ = ["from_dict", "to_dict", "parse_overrides", "deep_merge", "resolve_config_path", "load_yaml",
           "dataclass", "field"]
