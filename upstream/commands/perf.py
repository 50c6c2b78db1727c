"""asit perf: throughput / memory / scaling benchmarks written as JSON (see benchmarks/perf.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import positive_int
from ..errors import AsitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # only `asit perf` imports this module, so the model table is read from its one place
    from benchmarks.perf import MODELS, SIZE_ALIASES

    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=None,
                        help="benchmark models (default: every model, or only those --sizes names)")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZE_ALIASES), default=None,
                        help="old spelling of --models vit-<size>; adds to --models")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    parser.add_argument("--benches", nargs="+", default=["inference", "scaling", "pretrain"],
                        choices=["inference", "scaling", "pretrain", "data"],
                        help="data: the data path (decode + resample + fbank, clips/s on one core, cached against "
                             "functional resampling; benchmarks/data_path.py), run on its own")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="clip length for the inference and data benchmarks")
    parser.add_argument("--data-clips", type=positive_int, default=16,
                        help="data benchmark: files of each kind (WAV/FLAC x 44.1/16 kHz) per pass; --repeats passes "
                             "(default 5)")
    parser.add_argument("--batch", type=positive_int, default=None, help="clips per inference call (default 8)")
    parser.add_argument("--padding", default="step", choices=["step", "chunk"],
                        help="the runtime's padding option for inference, scaling and --compare")
    parser.add_argument("--train-batch", type=positive_int, default=8,
                        help="clips per pretraining step (paper: 40/GPU)")
    parser.add_argument("--train-frames", type=int, default=None,
                        help="crop length of the pretraining step in each model's own frames (default: the "
                             "model's crop, ViT 592 x 10 ms, conformer 500 x 20 ms)")
    parser.add_argument("--compile", action="store_true",
                        help="pretraining step with regional torch.compile of the encoders' blocks "
                             "(trainer.compile); the first step, the compilation, is reported apart")
    parser.add_argument("--durations", nargs="+", type=float, default=[1.0, 10.0, 60.0])
    parser.add_argument("--repeats", type=positive_int, default=None, help="timed runs per case (default 3)")
    parser.add_argument("--compare", action="store_true",
                        help="instead of the benches: the runtime against a plain timm ViT of the same size and "
                             "weights and against the matmul peak, fp32 and bf16, interleaved in one run "
                             "(ViT models; default vit-base; --batch default 4, --repeats default 5)")
    parser.add_argument("--out", default="benchmarks/results/perf.json")


def selected_models(args: argparse.Namespace, default: list[str] | None = None) -> list[str]:
    """--models plus the vit-* of --sizes, in that order; `default` (all of MODELS) when neither is given."""
    from benchmarks.perf import MODELS, SIZE_ALIASES

    models = list(args.models or [])
    for size in args.sizes or []:
        if SIZE_ALIASES[size] not in models:
            models.append(SIZE_ALIASES[size])
    return models or list(default or MODELS)


def run(args: argparse.Namespace) -> int:
    from benchmarks.perf import run_perf

    if Path(args.out).is_dir():      # the report is written at the end: refuse now, not after the benchmarks
        raise AsitError(f"--out {args.out} is a folder; give the JSON file to write, e.g. "
                        f"{Path(args.out) / 'perf.json'}")
    if "data" in args.benches and not args.compare:
        if len(set(args.benches)) > 1:
            raise AsitError("--benches data runs on its own (one thread, its own report); run the model benches "
                            "in another call")
        if args.device != "cpu":
            raise AsitError(f"--benches data times the CPU data path (a DataLoader worker); got --device "
                            f"{args.device}")
        from benchmarks.data_path import run_data_path

        run_data_path(Path(args.out), seconds=args.seconds, clips=args.data_clips, repeats=args.repeats or 5)
    elif args.compare:
        from benchmarks.perf_compare import run_compare

        run_compare(selected_models(args, default=["vit-base"]), args.device, Path(args.out), seconds=args.seconds,
                    batch=args.batch or 4, repeats=args.repeats or 5, padding=args.padding)
    else:
        run_perf(selected_models(args), args.precisions, args.device, Path(args.out), seconds=args.seconds,
                 batch=args.batch or 8, train_batch=args.train_batch, train_frames=args.train_frames,
                 repeats=args.repeats or 3, durations=args.durations, benches=tuple(args.benches),
                 padding=args.padding, compile_layers=args.compile)
    print(f"asit perf: wrote {args.out}")
    return 0
