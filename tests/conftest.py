"""Shared fixtures.

- ``shared_data``: the real public data folder (``../shared/data`` beside the clone, or
  $KIOSK_SHARED_DATA); tests that need it skip with a reason when it is absent.
- ``model_cache``: the prepared model cache. Real-model tests use it. When
  KIOSK_REQUIRE_MODELS=1 (set by scripts/test.sh, so CI) a missing model is a failure,
  not a skip: the real default models must run in CI.
- ``kiosk_cfg``: a KioskConfig whose data folder is a fresh temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("KIOSK_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real public data folder {path} is absent (set KIOSK_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def model_cache() -> Path:
    from kiosk_config import load_config

    return load_config(
        environ={k: v for k, v in os.environ.items() if k.startswith("KIOSK_")}
    ).paths.model_cache


def require_prepared(cache: Path, model_id: str, variant: str) -> Path:
    """The prepared variant folder, or skip (fail when KIOSK_REQUIRE_MODELS=1)."""
    from runtime.errors import ModelNotPreparedError
    from runtime.prepare.cache import prepared_variant_dir

    try:
        return prepared_variant_dir(cache, model_id, variant)
    except ModelNotPreparedError as exc:
        if os.environ.get("KIOSK_REQUIRE_MODELS") == "1":
            pytest.fail(f"required model missing: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def kiosk_cfg(tmp_path: Path, model_cache: Path):
    from kiosk_config import load_config

    return load_config(
        environ={"KIOSK_DATA_DIR": str(tmp_path / "data"), "KIOSK_MODEL_CACHE": str(model_cache)}
    )
