"""`asit bench` and `asit table` (registered in upstream/cli.py)."""
