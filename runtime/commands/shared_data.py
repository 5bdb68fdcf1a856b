"""Where the shared evaluation data is, and reading it within limits.

`kiosk eval retrieval` and `kiosk eval answers` (its `--benchmark` and `--faq-thresholds`)
read real public data from ``../shared/data`` beside the repository (docs/knowledge.md).
A user's clone does not have it, so a missing folder is a clear error naming what to pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from runtime.errors import KnowledgeError

MAX_DATA_FILE_BYTES = 64 * 1024 * 1024


class EvaluationDataError(KnowledgeError):
    """An evaluation data file is missing, too big or malformed."""


def shared_data_dir(explicit: Path | None = None) -> Path:
    """--data-dir, else $KIOSK_SHARED_DATA, else ../shared/data beside the repository."""
    repo = Path(__file__).resolve().parents[2]
    path = explicit or Path(os.environ.get("KIOSK_SHARED_DATA", repo.parent / "shared" / "data"))
    if not path.is_dir():
        raise EvaluationDataError(
            f"evaluation data folder {path} does not exist",
            hint="pass --data-dir or set KIOSK_SHARED_DATA to the shared data folder (see "
            "docs/knowledge.md)",
        )
    return path


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Shared data folder (default: $KIOSK_SHARED_DATA, else ../shared/data beside the "
    "repository).",
)


def read_data_text(path: Path) -> str:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise EvaluationDataError(
            f"evaluation file {path} does not exist", hint="check the data folder"
        ) from None
    if size > MAX_DATA_FILE_BYTES:
        raise EvaluationDataError(
            f"evaluation file {path} is {size} bytes, over {MAX_DATA_FILE_BYTES}",
            hint="use a smaller file",
        )
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvaluationDataError(
            f"evaluation file {path} is not UTF-8 ({exc})", hint="re-save it as UTF-8"
        ) from None
