"""Demo stage: SUPERB KS and SID on the embedded corpus through s3prl's own runner, with the demo's encoder frozen.

Each run is `asit s3prl -- …` in a subprocess (s3prl's main changes process-wide state), train then evaluate of the
last checkpoint, on the CPU smoke profile lengthened to `DEMO_STEPS` steps. A run whose evaluation is already in
its log is not redone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import AsitError
from .results import last_value

DEMO_STEPS = 40


def _asit_s3prl(ctx: Any, args: list[str]) -> None:
    command = [sys.executable, "-m", "upstream.cli", "s3prl", "--cache-dir", str(ctx.out_dir / "s3prl_cache"),
               "--", *args, "--device", "cpu"]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=ctx.out_dir, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise AsitError(f"s3prl run failed ({' '.join(args[:2])} …): " + " | ".join(tail))


def stage_s3prl(ctx: Any) -> None:
    """`asit s3prl-data` for both tasks, then train + evaluate KS and SID; accuracies go to ctx.report['s3prl']."""
    from tasks.s3prl_data import prepare_corpus

    prepared = prepare_corpus(ctx.corpus, ctx.out_dir / "s3prl_data")
    override = (f"config.runner.total_steps={DEMO_STEPS},,config.runner.eval_step={DEMO_STEPS},,"
                f"config.runner.save_step={DEMO_STEPS},,config.runner.log_step={DEMO_STEPS // 2}")
    report: dict[str, Any] = {}
    for task, run in prepared.items():
        expdir = ctx.out_dir / "s3prl" / task
        try:
            accuracy = last_value(expdir, "test", step=0)
        except AsitError:
            ctx.log(f"s3prl {task}: training {DEMO_STEPS} steps (frozen upstream, weighted sum) ...")
            _asit_s3prl(ctx, ["-m", "train", "-u", "asit_local", "-k", str(ctx.encoder), "-d", task,
                              "-c", str(run.configs["cpu_smoke"]), "-p", str(expdir), "-o", override])
            _asit_s3prl(ctx, ["-m", "evaluate", "-e", str(expdir / f"states-{DEMO_STEPS}.ckpt")])
            accuracy = last_value(expdir, "test", step=0)
        report[task] = {"test_accuracy": accuracy, "dev_accuracy": last_value(expdir, "dev"),
                        "steps": DEMO_STEPS, "expdir": str(expdir)}
        ctx.log(f"s3prl {task}: test accuracy {accuracy:.3f} (s3prl log {expdir / 'log.log'})")
    ctx.report["s3prl"] = report
