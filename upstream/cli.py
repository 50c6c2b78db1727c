"""`asit` command line. Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args)`;
this file only maps names to modules (imported lazily, so `asit info` does not import TensorFlow)."""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
from typing import Callable, Sequence

from .errors import AsitError
from .tensorboard_shim import tensorboard_without_tensorflow

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("upstream.commands.pretrain", "self-supervised pretraining from a config file + overrides"),
    "export": ("upstream.commands.export", "export the encoder of a pretraining/official checkpoint"),
    "info": ("upstream.commands.info", "show what a checkpoint holds"),
    "corpus": ("tasks.corpus.command", "generate the embedded default corpus (unlabelled + task layouts)"),
    "devsets": ("tasks.devsets.command", "build real-audio dev sets (ESC-50/VoxCeleb1/Speech Commands layouts) "
                "from Debian packages"),
    "demo": ("upstream.commands.demo",
             "the harness on the embedded corpus: corpus -> pretrain -> HEAR -> s3prl -> leaderboard"),
    "hear-tasks": ("tasks.hear_tasks", "convert local datasets into heareval task folders"),
    "s3prl": ("upstream.s3prl_upstream.command", "run s3prl's run_downstream with the ASiT upstream registered"),
    "s3prl-data": ("tasks.s3prl_data", "lay out local datasets the way s3prl's downstream readers expect"),
    "finetune": ("tasks.commands.finetune", "finetune an encoder on one benchmark with its recipe"),
    "probe": ("tasks.commands.probe", "linear/MLP probe on frozen embeddings (cached)"),
    "bench": ("benchmarks.commands.bench", "run a resumable suite of encoders x tasks x modes x seeds"),
    "table": ("benchmarks.commands.table", "leaderboard tables (Markdown, CSV, LaTeX, PNG) from results"),
    "reproduce": ("benchmarks.commands.reproduce", "re-run a results row's cell from its provenance and compare"),
    "perf": ("upstream.commands.perf", "throughput, memory and scaling benchmarks (JSON)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asit", description="asit-hear: pretrain and evaluate audio "
                                     "spectrogram transformers (HEAR, s3prl/SUPERB, finetuning).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        # parsers are filled lazily: only the chosen command's module is imported
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse `type` for an integer of at least `minimum` (argparse names the option in its error)."""
    wanted = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1)          # argparse `type` for counts and rates


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status. Output piped into a reader that stops early (`| head`) ends the
    command quietly with status 1, the way the Python documentation's note on SIGPIPE does it."""
    try:
        try:
            status = _main(argv)
        except SystemExit:                  # argparse's --help and usage errors: their output is flushed too
            sys.stdout.flush()
            raise
        sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise                           # a pipe of our own (a subprocess, a socket) broke: a real error
        # the reader went away: send what is still buffered to /dev/null so the interpreter's own flush at exit
        # cannot raise again, and exit without a traceback
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):   # a stdout without a file descriptor (tests' capture)
            pass
        return 1
    return status


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end was closed (poll reports POLLERR on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):     # no poll (Windows) or no file descriptor: trust the error
        return True


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            top.print_usage(sys.stderr)
            print(f"asit: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
            return 2
        top.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"asit {name}", description=help_text)
    tensorboard_without_tensorflow()
    try:
        module = importlib.import_module(module_name)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        result = module.run(args)
    except AsitError as exc:
        print(f"asit {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"asit {name}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
