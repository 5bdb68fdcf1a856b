"""Where prepared models live in the model cache, and how loaders find them.

Layout under the cache folder (``[paths] model_cache``, default
``~/.cache/kiosk-assistant/models``)::

    downloads/<model-id>/       fetched wheels / archives, reused between runs
    <model-id>/files/<name>     assembled source files, sha256-checked
    <model-id>/.stamps/<name>.json  size + mtime + sha256 of an assembled file (skips re-hashing)
    <model-id>/.tmp-*           work folders of an unfinished run, removed by the next run
    <model-id>/<variant>/       a prepared variant
    <model-id>/<variant>/PREPARED.json   written last: what was produced, with hashes

A variant folder without PREPARED.json is not prepared (it is never created
in place: recipes write to a temporary folder that is renamed when done).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtime.errors import ModelError, ModelNotPreparedError

PREPARED_RECORD = "PREPARED.json"


def downloads_dir(cache: Path) -> Path:
    return cache / "downloads"


def model_downloads_dir(cache: Path, model_id: str) -> Path:
    return downloads_dir(cache) / model_id


def model_dir(cache: Path, model_id: str) -> Path:
    return cache / model_id


def files_dir(cache: Path, model_id: str) -> Path:
    return cache / model_id / "files"


def stamps_dir(cache: Path, model_id: str) -> Path:
    return cache / model_id / ".stamps"


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


@contextmanager
def model_lock(cache: Path, model_id: str) -> Iterator[None]:
    """Hold <model-id>/.lock so two `kiosk models` runs never work on one model at once."""
    import fcntl

    folder = cache / model_id
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelError(
                f"model {model_id} is being prepared or verified by another process "
                f"(lock {folder / '.lock'})",
                hint="wait for the other `kiosk models` run to finish",
            ) from None
        yield
    finally:
        os.close(fd)
