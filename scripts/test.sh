#!/usr/bin/env bash
# The test command of the README and of CI: set up (idempotent) then run the default test selection.
# Extra arguments go to pytest, e.g. scripts/test.sh -m slow
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
