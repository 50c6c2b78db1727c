"""asit probe TASK --encoder PATH [--scratch] --data ROOT [--recipe NAME|YAML] [--fold N] [--seed S] [KEY=VALUE …]
   asit probe TASK --hear-module MODULE [--encoder MODEL_FILE] [--hear-options JSON] --data ROOT [...]"""

from __future__ import annotations

import argparse

from . import add_task_arguments, run_task_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, "probe")


def run(args: argparse.Namespace) -> int:
    return run_task_command(args, "probe")
