#!/usr/bin/env bash
# Optional: the system tools the real-audio dev sets need (docs/devsets.md), then (given OUT) build the sets.
# Usage: scripts/setup_devsets.sh [--no-apt] [OUT [asit devsets options...]]      (VENV=path overrides .venv)
#   - apt-installs the TTS engines and decoders: espeak-ng, flite, festival + the ked voice, sox, ffmpeg;
#   - refreshes the package lists, so that `asit devsets` can `apt-get download` the sound/speech data packages
#     itself (no root needed for that; they go to ~/.cache/asit-hear/debian-sources, not into the system).
# Not part of scripts/setup.sh or CI: the tests build the sets from a few generated files instead.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
APT_PACKAGES=(espeak-ng sox ffmpeg libsndfile1 flite festival festvox-kdlpc16k)

if [[ "${1:-}" == "--no-apt" ]]; then
  shift
else
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if (( ${#missing[@]} )); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

if [[ $# -gt 0 ]]; then
  if [[ ! -x "$VENV/bin/asit" ]]; then
    echo "setup_devsets: $VENV/bin/asit not found: run scripts/setup.sh first" >&2
    exit 2
  fi
  exec "$VENV/bin/asit" devsets "$@"
fi
echo "asit-hear: dev-set tools installed; build with: asit devsets [OUT]"
