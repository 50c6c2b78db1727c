"""Model cards: the short Markdown file `asit export` writes beside an encoder (encoder.pt → encoder.md) and
`asit info` prints.

A card says what an encoder file is without loading it: its identity (the weights + config digest that result rows
store as `checkpoint_sha256`), architecture, frontend, objective and pretraining, the data it was pretrained on (when
the export recorded it), how it was initialised (pretrained, or one of the floors), where it was exported from, and
the result rows measured with exactly this encoder. The card is a snapshot taken at export time: results added later
appear after the next `asit export`.

Rendering is pure (`render_card` reads no file and no store) so that the card's content is testable on plain dicts and
`asit export` decides alone where rows come from; `write_card` is the one place a card is written (at the end of
pretraining and by `asit export`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from .atomic import atomic_write_text

CARD_SUFFIX = ".md"
NOT_RECORDED = "not recorded"
_FULL_IDENTITY = re.compile(r"^  - full: `([0-9a-f]{64})`$", re.MULTILINE)
SHORT_ID = 16          # hex digits of an identity shown inline (the full one follows)
# shown after the objective's own settings: these of the run's config (dotted path, text)
RUN_SETTINGS = (("seed", "seed {}"), ("data.crop_frames", "{} frames per crop"), ("data.num_views", "{} views"),
                ("data.batch_size", "batch {} per process"), ("optim.lr", "lr {} per 256 samples"),
                ("trainer.max_epochs", "max_epochs {}"), ("trainer.max_steps", "max_steps {}"),
                ("trainer.precision", "precision {}"))
SOURCES = {"export": "an exported encoder", "lightning": "a Lightning pretraining checkpoint",
           "official": "an official ASiT checkpoint", "state_dict": "a bare backbone state dict"}


def card_path(encoder_path: str | Path) -> Path:
    """Where the card of an encoder file lives: the same path with the suffix `.md` (encoder.pt → encoder.md)."""
    return Path(encoder_path).with_suffix(CARD_SUFFIX)


def card_identity(text: str) -> str | None:
    """The identity a card was written for (its `full:` line), so that a reader can tell a stale card (the encoder
    file was replaced after its card was written) from a current one; None when the card names none."""
    match = _FULL_IDENTITY.search(text)
    return match.group(1) if match else None


def card_info(path: str | Path, encoder: Any, frontend: Any, meta: Mapping[str, Any], identity: str,
              results_from: Iterable[str | Path] = ()) -> dict[str, Any]:
    """What `render_card` needs of an in-memory encoder: the fields `describe_checkpoint` gives for a file, plus the
    identity, the encoder config (depth, dim, patch) and the result stores that were searched."""
    return {
        "path": str(path),
        "kind": "exported encoder",
        "arch": encoder.arch,
        "encoder": encoder.describe(),
        "config": dataclasses.asdict(encoder.config),
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "frontend": dataclasses.asdict(frontend),
        "meta": dict(meta),
        "identity": identity,
        "results_from": [str(p) for p in results_from],
    }


def write_card(path: str | Path, encoder: Any, frontend: Any, meta: Mapping[str, Any], identity: str,
               rows: list[dict[str, Any]] | None = None, results_from: Iterable[str | Path] = ()) -> Path:
    """Render the card of the encoder file `path` (with `rows`, its result rows found in `results_from`) and write it
    atomically beside that file; returns the card's path."""
    card = card_path(path)
    atomic_write_text(card, render_card(card_info(path, encoder, frontend, meta, identity, results_from), rows or []))
    return card


def matching_rows(rows: Iterable[Mapping[str, Any]], identity: str) -> list[dict[str, Any]]:
    """The successful rows measured with the encoder of `identity`, one per cell key (the first wins), in table order.

    Rows whose `init` is a floor (scratch, fbank_stats) are left out even when their `checkpoint_sha256` is this
    identity: that field names the file the floor was drawn from, not the encoder the row measured. A floor exported
    with `asit export --init ...` has its own identity, and rows measured with that file match its card."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for row in rows:
        if (row.get("status") != "ok" or row.get("checkpoint_sha256") != identity
                or (row.get("init") or "pretrained") != "pretrained" or row.get("key") in seen):
            continue
        seen.add(str(row.get("key")))
        out.append(dict(row))
    return sorted(out, key=lambda r: (str(r.get("task")), str(r.get("protocol")), str(r.get("mode")),
                                      str(r.get("metric")), _sortable(r.get("seed")), _sortable(r.get("fold"))))


def _sortable(value: Any) -> tuple[int, Any]:
    """Numbers in order, then other values as text, then None (a fold-less task)."""
    if value is None:
        return (2, "")
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _get(mapping: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(mapping, Mapping) or part not in mapping:
            return None
        mapping = mapping[part]
    return mapping


def _flat(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`{"masking": {"ratio": 0.7}, "out_dim": 256}` → ["masking.ratio 0.7", "out_dim 256"]."""
    out: list[str] = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out.extend(_flat(value, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key} {value}")
    return out


def _percent(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{100.0 * number:.2f}" if math.isfinite(number) else "—"


def _g(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _cell(value: Any) -> str:
    return "—" if value is None or value == "" else str(value).replace("|", "\\|")


def _identity_lines(identity: str) -> list[str]:
    if not identity:
        return [f"- **Identity**: {NOT_RECORDED}"]
    return [f"- **Identity**: `{identity[:SHORT_ID]}` (weights + config; result rows store it as `checkpoint_sha256`)",
            f"  - full: `{identity}`"]


def _architecture(info: Mapping[str, Any]) -> str:
    config = info.get("config") or {}
    parts = [f"`{info.get('arch', config.get('arch', '?'))}`"]
    for key, label in (("size", "size"), ("depth", "depth"), ("embed_dim", "dim"), ("num_heads", "heads"),
                       ("patch_size", "patch"), ("stack", "frames/step"), ("trained_frames", "trained frames")):
        if config.get(key) is not None:
            parts.append(f"{label} {config[key]}")
    parameters = info.get("parameters")
    count = f"{parameters:,} parameters" if isinstance(parameters, int) else "parameters " + NOT_RECORDED
    return f"- **Architecture**: {', '.join(parts)}; {count}"


def _frontend(frontend: Mapping[str, Any]) -> str:
    if not frontend:
        return f"- **Frontend**: {NOT_RECORDED}"
    stats = f"stats {frontend.get('stats')}"
    if frontend.get("mean") is not None and frontend.get("std") is not None:
        stats += (f" (mean {_g(frontend['mean'])}, std {_g(frontend['std'])}, divided by "
                  f"{_g(frontend.get('std_scale', 1))}·std)")
    return (f"- **Frontend**: {frontend.get('sample_rate')} Hz, {frontend.get('num_mel_bins')} mel bins, "
            f"{_g(frontend.get('frame_length_ms'))}/{_g(frontend.get('frame_shift_ms'))} ms, {stats}, "
            f"pad_with {frontend.get('pad_with')}")


def _objective(meta: Mapping[str, Any], source: str) -> str:
    config = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
    objective = config.get("objective") if isinstance(config.get("objective"), Mapping) else {}
    name = objective.get("name") or meta.get("objective")
    if not name:
        if source == "official":
            return "- **Objective**: asit (official Sara-Ahmed/ASiT checkpoint; its settings are in its own args)"
        return f"- **Objective**: {NOT_RECORDED}"
    settings = _flat({k: v for k, v in objective.items() if k != "name"})
    settings += [template.format(value) for dotted, template in RUN_SETTINGS
                 if (value := _get(config, dotted)) is not None]
    return f"- **Objective**: {name}" + (f" ({', '.join(settings)})" if settings else "")


def _steps(meta: Mapping[str, Any]) -> str:
    parts = []
    if meta.get("global_step") is not None:
        parts.append(f"{meta['global_step']} optimizer steps")
    if meta.get("epoch") is not None:
        parts.append(f"epoch counter {meta['epoch']}")
    return f"- **Pretraining steps**: {', '.join(parts) if parts else NOT_RECORDED}"


def _data(meta: Mapping[str, Any]) -> str:
    data = meta.get("data")
    if not isinstance(data, Mapping) or not data.get("digest"):
        return f"- **Pretraining data**: {NOT_RECORDED}"
    parts = [f"source `{data.get('source', '?')}`"]
    if data.get("clips") is not None:
        parts.append(f"{data['clips']} clips")
    parts.append(f"fingerprint `{data['digest']}`" + (f" (covers {data['content']})" if data.get("content") else ""))
    return f"- **Pretraining data**: {', '.join(parts)}"


def _init(meta: Mapping[str, Any]) -> str:
    init = meta.get("init") or "pretrained"
    if init == "scratch":
        seed = meta.get("init_seed")
        return (f"- **Init**: scratch, random weights from seed {seed if seed is not None else NOT_RECORDED} (a "
                "floor: the source's architecture and frontend, none of its training)")
    if init == "fbank_stats":
        return "- **Init**: fbank_stats (a floor: the source's normalised fbank statistics, no weights)"
    return f"- **Init**: {init}"


def _exported_from(info: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    origin = meta.get("exported_from")
    if not origin:
        return f"- **Exported from**: {NOT_RECORDED} (written by `asit pretrain` at the end of its run, or older)"
    source = meta.get("source")
    details = [SOURCES.get(str(source), f"a {source} file") if source else "",
               f"its {meta['which']}" if meta.get("which") else ""]
    details = [d for d in details if d]
    return f"- **Exported from**: `{origin}`" + (f" ({', '.join(details)})" if details else "")


RESULT_HEADER = ("| task | protocol | mode | metric | value (%) | seed | fold | data fingerprint | row key |\n"
                 "|---|---|---|---|---|---|---|---|---|")


def _result_line(row: Mapping[str, Any]) -> str:
    extra = row.get("extra") if isinstance(row.get("extra"), Mapping) else {}
    fingerprint = _get(extra, "data_fingerprint.digest")
    cells = [row.get("task"), row.get("protocol"), row.get("mode"), row.get("metric"), _percent(row.get("value")),
             row.get("seed"), row.get("fold"), f"`{str(fingerprint)[:SHORT_ID]}`" if fingerprint else None,
             f"`{str(row.get('key', ''))[:12]}`" if row.get("key") else None]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render_card(info: Mapping[str, Any], rows: list[dict[str, Any]]) -> str:
    """The Markdown card of an encoder described by `info` (`card_info`, or `describe_checkpoint` plus `identity`
    and `config`) with its result `rows` (plain store rows, already those of this encoder: `matching_rows`)."""
    meta = info.get("meta") or {}
    floor = (meta.get("init") or "pretrained") != "pretrained"
    lines = [f"# {Path(str(info.get('path', 'encoder'))).name}", "",
             f"Model card written by `asit export`; `asit info {Path(str(info.get('path', 'FILE'))).name}` prints it.",
             ""]
    lines += _identity_lines(str(info.get("identity") or ""))
    lines += [_architecture(info), _frontend(info.get("frontend") or {}), _init(meta)]
    if floor:
        lines.append("- The objective, steps and data below are those of the checkpoint this floor was drawn from; "
                     "this encoder was not trained.")
    lines += [_objective(meta, str(meta.get("source", info.get("source", "")))), _steps(meta), _data(meta),
              _exported_from(info, meta)]
    lines += ["", "## Results", ""]
    stores = [str(s) for s in info.get("results_from") or []]
    if rows:
        lines += [RESULT_HEADER, *(_result_line(row) for row in rows), ""]
        lines.append(f"{len(rows)} row(s) whose `checkpoint_sha256` is this identity"
                     + (f", from {', '.join(f'`{s}`' for s in stores)}" if stores else "") + ".")
    else:
        searched = f" in {', '.join(f'`{s}`' for s in stores)}" if stores else ": no results store was searched"
        lines.append(f"No results recorded for this checkpoint yet{searched}. Run `asit bench` / `asit probe`, then "
                     "`asit export` again.")
    return "\n".join(lines) + "\n"


__all__ = ["CARD_SUFFIX", "card_identity", "card_info", "card_path", "matching_rows", "render_card", "write_card"]
