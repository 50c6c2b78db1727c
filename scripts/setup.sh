#!/usr/bin/env bash
# Unattended set-up of a fresh Debian machine: system packages, .venv with the pinned stack, the project.
# Usage: scripts/setup.sh [--no-apt]      (VENV=path overrides .venv)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
APT_PACKAGES=(espeak-ng sox ffmpeg libsndfile1)

if [[ "${1:-}" != "--no-apt" ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if (( ${#missing[@]} )); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# the Python stack is reinstalled only when what defines it changed (stamp = hash of these files)
STAMP="$VENV/.asit-setup-stamp"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "asit-hear: environment in $VENV is up to date"
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U "pip>=24" wheel "setuptools<81"
# torch/torchvision/torchaudio pinned in the same resolution as everything else (constraints.txt).
"${PIP[@]}" install -c "$ROOT/constraints.txt" -e "$ROOT[dev,hear,s3prl]"
# heareval / hearvalidator pin numpy 1.19 and numba 0.48 (no cp311 wheels): their real needs come from [hear].
"${PIP[@]}" install -c "$ROOT/constraints.txt" --no-deps heareval==2021.1.3 hearvalidator==2021.0.2
# s3prl upgrades setuptools; dcase_util and pytorch-lightning 1.x still import pkg_resources.
"${PIP[@]}" install -c "$ROOT/constraints.txt" "setuptools<81"
"$VENV/bin/python" -m pip check >/dev/null || true   # heareval's unsatisfiable pins are expected (see above)
echo "$WANT" > "$STAMP"
echo "asit-hear: environment ready in $VENV"
