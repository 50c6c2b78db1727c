"""asit perf: throughput / memory / scaling benchmarks written as JSON (see benchmarks/perf.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"], choices=["tiny", "small", "base"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    parser.add_argument("--benches", nargs="+", default=["inference", "scaling", "pretrain"],
                        choices=["inference", "scaling", "pretrain"])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length for the inference benchmark")
    parser.add_argument("--batch", type=int, default=8, help="clips per inference call")
    parser.add_argument("--train-batch", type=int, default=8, help="clips per pretraining step (paper: 40/GPU)")
    parser.add_argument("--train-frames", type=int, default=592, help="crop length of the pretraining step")
    parser.add_argument("--durations", nargs="+", type=float, default=[1.0, 10.0, 60.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/perf.json")


def run(args: argparse.Namespace) -> int:
    from benchmarks.perf import run_perf

    run_perf(args.sizes, args.precisions, args.device, Path(args.out), seconds=args.seconds, batch=args.batch,
             train_batch=args.train_batch, train_frames=args.train_frames, repeats=args.repeats,
             durations=args.durations, benches=tuple(args.benches))
    print(f"asit perf: wrote {args.out}")
    return 0
