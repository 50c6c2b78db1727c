"""Subcommands of `asit` (see upstream/cli.py)."""
