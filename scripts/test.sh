#!/usr/bin/env bash
# Run the whole test suite from a fresh clone: install (scripts/setup.sh with the test tools),
# then pytest over tests/ with the real default models required (a missing model fails,
# it does not skip). Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${KIOSK_VENV:-$ROOT/.venv}

KIOSK_SETUP_DEV=1 bash "$ROOT/scripts/setup.sh"

cd "$ROOT"
export KIOSK_REQUIRE_MODELS=1 KIOSK_REQUIRE_NGINX=1
# Tests never use the operator's data folder.
export KIOSK_DATA_DIR="${KIOSK_TEST_DATA_DIR:-$(mktemp -d)}"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider --durations=15 "$@"
