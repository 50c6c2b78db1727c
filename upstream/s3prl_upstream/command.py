"""`asit s3prl -- <run_downstream.py arguments>`: s3prl's own `run_downstream` with the ASiT upstream registered.

The launcher applies the compat shims (`compat.install`), imports `s3prl.hub`, adds `asit_local` / `asit_official`
to it, points the voxceleb1 file-list cache at a content-keyed folder, and calls `s3prl.run_downstream.main()` with
the given arguments in this process. Training, evaluation, checkpoints and logs are s3prl's; nothing is
re-implemented. A few arguments are checked first, so that a typo fails with one line instead of a traceback.
`--lr-sweep LOW HIGH` runs one training + evaluation per learning rate of a grid and chooses on dev (sweep.py).
"""

from __future__ import annotations

import argparse
import builtins
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from ..errors import AsitError
from . import sweep

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asit-hear" / "s3prl"

EPILOG = """examples (see docs/s3prl.md):
  asit s3prl -- -m train -u asit_local -k encoder.pt -d speech_commands -c data/s3prl/speech_commands/superb.yaml \\
      -p result/ks_asit
  asit s3prl -- -m evaluate -e result/ks_asit/dev-best.ckpt
  asit s3prl -- -m train -f -u asit_local -k encoder.pt -d voxceleb1 -c data/s3prl/voxceleb1/superb.yaml \\
      -p result/sid_ft
  asit s3prl --lr-sweep 1e-5 1e-1 -- -m train -u asit_local -k encoder.pt -d voxceleb1 \\
      -c data/s3prl/voxceleb1/superb.yaml -p result/sid_sweep
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where s3prl's voxceleb1 file lists are cached, keyed by data folder and split file "
                             f"(default: {DEFAULT_CACHE})")
    parser.add_argument("downstream_args", nargs=argparse.REMAINDER,
                        help="s3prl run_downstream.py arguments, after --; upstreams: asit_local (our exports and "
                             "pretraining checkpoints), asit_official (official ASiT checkpoints), with -k FILE")
    sweep.add_arguments(parser)


def _inspect(argv: Sequence[str]) -> argparse.Namespace:
    """The few run_downstream options the launcher checks (same spellings as s3prl's parser)."""
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    probe.add_argument("-m", "--mode")
    probe.add_argument("-c", "--config")
    probe.add_argument("-e", "--past_exp")
    probe.add_argument("-d", "--downstream")
    probe.add_argument("-p", "--expdir")
    probe.add_argument("-n", "--expname")
    probe.add_argument("-a", "--auto_resume", action="store_true")
    probe.add_argument("--device")
    probe.add_argument("--hub", default="torch")
    probe.add_argument("--push_to_hf_hub", default=False)
    known, _ = probe.parse_known_args(list(argv))
    return known


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """Check what s3prl would otherwise fail on with a traceback; default `--device cpu` without CUDA."""
    argv = list(argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise AsitError("give s3prl's run_downstream arguments after --, e.g. asit s3prl -- -m train -u asit_local "
                        "-k encoder.pt -d speech_commands -c config.yaml -p result/ks")
    opts = _inspect(argv)
    if opts.hub != "torch" or opts.push_to_hf_hub not in (False, "False", "false", "0"):
        raise AsitError("--hub huggingface and --push_to_hf_hub are not supported (huggingface_hub >= 1.0 removed "
                        "the APIs s3prl 0.4.18 uses for them)")
    if opts.past_exp:
        if not Path(opts.past_exp).exists():
            raise AsitError(f"checkpoint -e {opts.past_exp} does not exist")
    elif opts.config is None:
        if not (opts.auto_resume and any(expdir_of(argv).glob("states-*.ckpt"))):
            raise AsitError("pass -c CONFIG: s3prl 0.4.18 ships no downstream config.yaml; use the one "
                            "`asit s3prl-data` writes, or a template from upstream/s3prl_upstream/configs/")
    elif not Path(opts.config).is_file():
        raise AsitError(f"config -c {opts.config} does not exist")
    if opts.device is None:
        import torch

        if not torch.cuda.is_available():
            print("asit s3prl: no CUDA device, running s3prl with --device cpu", file=sys.stderr)
            argv += ["--device", "cpu"]
    return argv


def expdir_of(argv: Sequence[str]) -> Path:
    """Where s3prl writes this run (its own rule: -p, else result/downstream/<-n>; -e: the checkpoint's folder)."""
    opts = _inspect(argv)
    if opts.past_exp and not opts.expdir:
        past = Path(opts.past_exp)
        return past if past.is_dir() else past.parent
    return Path(opts.expdir) if opts.expdir else Path("result/downstream") / str(opts.expname)


_last_start_second: int | None = None     # the wall-clock second the previous run_downstream of this process began


def _after_previous_run_second() -> None:
    """Wait, if needed, until the second after the previous run's start: s3prl names its record of a run's arguments
    `args_<time to the second>.yaml` in the experiment folder, so an evaluation started in the same second as its
    training (a short run, the sweep's train-then-evaluate in one process) overwrote the training's record, and the
    folder no longer showed a training run."""
    global _last_start_second
    now = time.time()
    if _last_start_second is not None and int(now) <= _last_start_second:
        time.sleep(_last_start_second + 1 - now)
    _last_start_second = int(time.time())


def run_downstream(argv: Sequence[str], cache_dir: Path = DEFAULT_CACHE) -> None:
    """Shims, registration, then s3prl's own `run_downstream.main()` with `argv` (process state is restored
    afterwards: s3prl replaces `builtins.isinstance` and reads `sys.argv`). Two calls in one process start in
    different seconds, so s3prl's time-tagged `args_*.yaml` / `config_*.yaml` of the first are never overwritten."""
    from . import compat, hubconf

    compat.install()
    import s3prl.hub
    from s3prl import run_downstream as s3prl_run_downstream

    hubconf.register(s3prl.hub)
    compat.use_voxceleb1_cache(cache_dir / "voxceleb1")
    saved_argv, saved_isinstance = sys.argv, builtins.isinstance
    sys.argv = ["run_downstream.py", *argv]
    _after_previous_run_second()
    try:
        s3prl_run_downstream.main()
    finally:
        sys.argv = saved_argv
        builtins.isinstance = saved_isinstance


def run(args: argparse.Namespace) -> int:
    from .results import read_log

    if "--lr-sweep" in args.downstream_args or "--lr-points" in args.downstream_args:
        raise AsitError("--lr-sweep / --lr-points are options of asit s3prl: put them before --")
    if args.lr_sweep is None:
        if args.lr_points is not None:
            raise AsitError("--lr-points needs --lr-sweep LOW HIGH")
    else:
        return run_lr_sweep(args)
    argv = prepare_argv(args.downstream_args)
    run_downstream(argv, args.cache_dir)
    expdir = expdir_of(argv)
    try:
        records = read_log(expdir)
    except AsitError:
        return 0
    latest = {r.split: r for r in records}
    shown = ", ".join(f"{r.split} {r.value:.4f} (step {r.step})" for r in latest.values())
    print(f"asit s3prl: {expdir / 'log.log'}: latest {shown}")
    return 0


def run_lr_sweep(args: argparse.Namespace) -> int:
    """`--lr-sweep`: every point's train + evaluate through `run_downstream` (upstream/s3prl_upstream/sweep.py)."""
    sweep_args = sweep.parse_sweep_args(args.downstream_args)
    grid = sweep.lr_grid(*args.lr_sweep, args.lr_points)
    sweep.run_sweep(sweep_args, grid, args.cache_dir, run_downstream, prepare_argv)
    return 0
