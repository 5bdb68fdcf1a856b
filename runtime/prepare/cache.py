"""Where prepared models live in the model cache, and how loaders find them.

Layout under the cache folder (``[paths] model_cache``, default
``~/.cache/kiosk-assistant/models``)::

    downloads/                  fetched wheels / archives, reused between runs
    <model-id>/files/<name>     assembled source files, sha256-checked
    <model-id>/<variant>/       a prepared variant
    <model-id>/<variant>/PREPARED.json   written last: what was produced, with hashes

A variant folder without PREPARED.json is not prepared (it is never created
in place: recipes write to a temporary folder that is renamed when done).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.errors import ModelNotPreparedError

PREPARED_RECORD = "PREPARED.json"


def downloads_dir(cache: Path) -> Path:
    return cache / "downloads"


def files_dir(cache: Path, model_id: str) -> Path:
    return cache / model_id / "files"


def variant_dir(cache: Path, model_id: str, variant: str) -> Path:
    return cache / model_id / variant


def read_record(cache: Path, model_id: str, variant: str) -> dict[str, Any] | None:
    record = variant_dir(cache, model_id, variant) / PREPARED_RECORD
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def prepared_variant_dir(cache: Path, model_id: str, variant: str) -> Path:
    """The folder of a prepared variant, or ModelNotPreparedError saying how to prepare it."""
    if read_record(cache, model_id, variant) is None:
        raise ModelNotPreparedError(
            f"model {model_id} ({variant}) is not prepared in {cache}",
            hint=f"run: kiosk models prepare {model_id}",
        )
    return variant_dir(cache, model_id, variant)
