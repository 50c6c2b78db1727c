"""The contract between task runners (tasks/) and suites/leaderboards (benchmarks/): one cell in, one result out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from upstream.errors import AsitError
from upstream.hashing import file_sha256

MODES = ("finetune", "probe")
TASKS = ("as20k", "esc50", "speechcommands_v2", "speechcommands_v1", "voxceleb1")
HEAR_MODULE_SOURCE = "hear_module"    # `encoder_source` of rows whose encoder is a HEAR 2021 module


class EncoderOptions(dict):
    """A HEAR module's `load_model` keyword arguments, read-only so that an `EncoderSpec` stays frozen and hashable
    (hashed by its canonical JSON); a plain dict for everything that reads it (asdict, JSON rows, `**options`)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(canonical_json(self))

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("EncoderSpec options are read-only; build a new spec (dataclasses.replace)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only  # type: ignore

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and deep-copy by construction (the default would refill the copy item by item, refused here)."""
        return (EncoderOptions, (dict(self),))


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON: one text for one value, whatever the order its mappings were written in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder to evaluate. `init="scratch"` keeps the file's architecture and frontend but re-initialises the
    weights (the paper's "Scratch" rows).

    `module` names an installed HEAR 2021 module (someone else's model: BYOL-A, PaSST, …) instead of one of our
    checkpoints: its `load_model(path, **options)` is the encoder (`load_model(**options)` when `path` is empty), as
    heareval's own runner calls it. Such an encoder is probed on its `get_scene_embeddings`; it has no random-init
    twin (init must be pretrained) and is never finetuned."""

    name: str                         # row label in tables, e.g. "asit-tiny-demo"
    path: str                         # export / Lightning checkpoint / official ASiT checkpoint; with `module`: the
                                      # module's model file ("" when it takes none)
    init: str = "pretrained"          # "pretrained" | "scratch"
    module: str = ""                  # a HEAR 2021 module's import name ("" = `path` is one of our checkpoints)
    options: Mapping[str, Any] = field(default_factory=EncoderOptions)   # with `module`: load_model's keywords

    def __post_init__(self) -> None:
        if not isinstance(self.options, Mapping):
            raise AsitError(f"encoder {self.name}: options must be a mapping of load_model keywords, "
                            f"got {self.options!r}")
        object.__setattr__(self, "options", EncoderOptions(self.options))
        if self.module and self.init != "pretrained":
            raise AsitError(f"encoder {self.name}: init {self.init!r} is not available for a HEAR module "
                            f"({self.module}): a foreign module cannot be re-initialised as a random-init twin; use "
                            "init pretrained")
        if self.options and not self.module:
            raise AsitError(f"encoder {self.name}: options are load_model keywords of a HEAR module; give `module` "
                            "or drop them")


def hear_module_identity(spec: EncoderSpec) -> str:
    """What a HEAR module encoder's rows, cell keys and cached embeddings are keyed by (64 hex digits): SHA-256 over
    the module name, the SHA-256 of the model file's bytes ("" without a file) and the options as sorted JSON. Our
    checkpoints' identity (upstream.identity) reads their weights; a foreign file can only be taken as bytes. A
    missing model file raises AsitError naming it."""
    if not spec.module:
        raise ValueError(f"encoder {spec.name} is not a HEAR module")
    model = file_sha256(spec.path) if spec.path else ""
    payload = canonical_json({"hear_module": spec.module, "model_sha256": model, "options": dict(spec.options)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TaskCell:
    """One unit of work of a suite: an encoder on a task, in a mode, under a protocol, for a seed and fold."""

    encoder: EncoderSpec
    task: str                         # one of TASKS
    mode: str                         # one of MODES
    protocol: str                     # e.g. "esc50/train4-test1", "superb/ks-v1-12class", "voxceleb1/iden-split"
    seed: int = 0
    fold: int | None = None           # the held-out test fold for cross-validated tasks
    data_root: str = ""               # the dataset's root folder in its real layout
    recipe: str = ""                  # recipe name or YAML path; "" = the task's default recipe for the mode
    overrides: dict[str, Any] = field(default_factory=dict)   # recipe overrides (e.g. epochs for CPU suites)


@dataclass
class TaskResult:
    metric: str                       # "accuracy" | "mAP"
    value: float
    extra: dict[str, Any] = field(default_factory=dict)   # n_train, n_test, epochs, encoder forwards, …
