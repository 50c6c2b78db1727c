"""asit export CHECKPOINT OUT [--format pt|safetensors] [--which teacher|student] [--sample-rate SR]
[--init pretrained|scratch|fbank_stats] [--seed N] [--results PATH ...]

Writes OUT and, beside it, its model card (OUT with the suffix .md; upstream/model_card.py): what the encoder is and
the result rows measured with it in the results stores. OUT's format is --format when given, else its name's
(`.safetensors`: safetensors, any other: pt); a --format that contradicts the name is refused before any work
(upstream.checkpoint.export_file_format)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..checkpoint import FILE_FORMATS, export_file_format, load_encoder, save_encoder
from ..cli import positive_int
from ..errors import AsitError
from ..floors import INITS, initialised
from ..identity import encoder_identity
from ..model_card import CARD_SUFFIX, matching_rows, write_card

DEFAULT_RESULTS = "results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="Lightning pretraining checkpoint, official ASiT checkpoint, or export")
    parser.add_argument("out", help="where to write the exported encoder (.pt: weights_only-loadable torch file; "
                                    ".safetensors: safetensors file, configs in its metadata); its model card goes "
                                    "beside it (OUT with the suffix .md)")
    parser.add_argument("--format", choices=FILE_FORMATS, default=None,
                        help="file format of OUT (default: safetensors when OUT ends in .safetensors, else pt); a "
                             "format contradicting OUT's suffix (.safetensors vs .pt/.pth/.ckpt) is refused")
    parser.add_argument("--which", choices=("teacher", "student"), default="teacher",
                        help="which network of a pretraining checkpoint (default: teacher, as the paper finetunes)")
    parser.add_argument("--sample-rate", type=positive_int, default=None, metavar="HZ",
                        help="override the sample rate the fbank is computed at (official ASiT checkpoints: 32000)")
    parser.add_argument("--init", choices=INITS, default="pretrained",
                        help="export the checkpoint's floor instead: `scratch` (same architecture and frontend, "
                             "random weights from --seed) or `fbank_stats` (same frontend, no weights), e.g. for "
                             "heareval's random-init row")
    parser.add_argument("--scratch", dest="init", action="store_const", const="scratch",
                        help="shorthand for --init scratch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --init scratch weights (default 0)")
    parser.add_argument("--results", action="append", metavar="PATH",
                        help="results store file, or a folder of *.jsonl stores, whose rows of this encoder the "
                             f"model card lists (repeatable; default: {DEFAULT_RESULTS}/ when that folder exists)")


def exported_meta(loaded_meta: dict[str, Any], args: argparse.Namespace, source: str) -> dict[str, Any]:
    """The export's meta: the source's, plus where it came from and how it was initialised. Re-exporting a floor
    with the default `--init pretrained` keeps it a floor (its weights are still the floor's); exporting a file onto
    itself (to rewrite its model card) keeps where it was first exported from."""
    meta = dict(loaded_meta)
    in_place = Path(args.checkpoint).resolve() == Path(args.out).resolve()
    if not (in_place and "exported_from" in meta):
        meta.update(exported_from=str(args.checkpoint), source=source)
    if args.init != "pretrained":
        meta["init"] = args.init
        meta.pop("init_seed", None)
    meta.setdefault("init", "pretrained")
    if args.init == "scratch":
        meta["init_seed"] = args.seed
    return meta


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():      # before the (slow) load; atomic_write refuses it too, later
        raise AsitError(f"OUT {args.out} is a folder; give the file to write, e.g. {out / 'encoder.pt'}")
    if out.suffix == CARD_SUFFIX:
        raise AsitError(f"OUT {args.out} ends in {CARD_SUFFIX}, the name of its model card; give e.g. "
                        f"{out.with_suffix('.pt')}")
    file_format = export_file_format(out, args.format, what="--format")   # before the (slow) load too
    # benchmarks/ sits above upstream/ (it imports upstream); this CLI command is the layer above both, so it reads
    # the results stores, importing them here and not at module level: `import upstream...` never pulls benchmarks in
    from benchmarks.results import ResultsStore
    from benchmarks.table import store_files

    results = args.results if args.results is not None else (
        [DEFAULT_RESULTS] if Path(DEFAULT_RESULTS).is_dir() else [])
    stores = store_files(results)        # a missing --results PATH is refused before the (slow) load
    loaded = load_encoder(args.checkpoint, which=args.which, sample_rate=args.sample_rate)
    encoder = initialised(loaded.encoder, args.init, args.seed)
    meta = exported_meta(loaded.meta, args, loaded.source)
    path = save_encoder(out, encoder, loaded.frontend, meta, file_format=file_format)
    # the identity of the file as written (a floor's differs from its source's), as result rows key it
    identity = encoder_identity(path)
    rows = matching_rows((row for store in stores for row in ResultsStore(store).rows()), identity)
    card = write_card(path, encoder, loaded.frontend, meta, identity, rows, results)
    floor = "" if meta["init"] == "pretrained" else f", floor: {meta['init']}"
    print(f"asit export: wrote {path} ({file_format}; {loaded.source}{floor}, {loaded.frontend.sample_rate} Hz "
          f"frontend) and its model card {card} ({len(rows)} result row(s))")
    return 0
