"""The demo knowledge store, built once from kiosk_config/demo and cached by content hash.

`kiosk demo`, `kiosk ask` and `kiosk serve` need knowledge before any pack is
installed. The store file is named by a hash of the demo sources and the
embedding model, so editing a demo document or switching embedder builds a new
file, and an unchanged demo opens in milliseconds. It is built under a temporary
name and renamed into place, so an interrupted build never leaves a half store.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from runtime.errors import KnowledgeError
from runtime.inference.base import Embedder

log = logging.getLogger(__name__)

DEMO_SOURCE = Path(__file__).resolve().parent.parent.parent / "kiosk_config" / "demo"


def demo_inputs(source: Path = DEMO_SOURCE) -> list[Path]:
    """The demo documents and FAQ (not the README or the evaluation questions)."""
    return [source / "docs", source / "faq.csv"]


def demo_hash(embedder: Embedder, source: Path = DEMO_SOURCE) -> str:
    """Hash of the demo files, the embedder and the store's schema code (schema change: rebuild)."""
    from runtime.knowledge import migrations, text

    # The schema and the tokenizer (what the FTS columns hold) decide the store's contents.
    schema = Path(migrations.__file__).read_bytes() + Path(text.__file__).read_bytes()
    h = hashlib.sha256(f"{embedder.model_id}\0{embedder.dim}\0".encode() + schema)
    for root in demo_inputs(source):
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(source)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def open_demo_store(
    data_dir: Path, embedder: Embedder, *, source: Path = DEMO_SOURCE, progress=None
):
    """Open (building first if needed) the demo store in ``data_dir/demo``: (store, built)."""
    from runtime.knowledge.ingest import ingest_paths
    from runtime.knowledge.store import KnowledgeStore

    folder = data_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"demo-{demo_hash(embedder, source)}.sqlite"
    built = False
    if not path.exists():
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            stale.unlink(missing_ok=True)
        store = KnowledgeStore.open(tmp, embedding_model=embedder.model_id, dim=embedder.dim)
        try:
            report = ingest_paths(store, demo_inputs(source), embedder, progress=progress)
            if not report.ok or report.all_failed:
                raise KnowledgeError(
                    f"building the demo store from {source} failed: {report.to_dict()}",
                    hint="check the demo files; run with -v for details",
                )
        finally:
            store.close()
        os.replace(tmp, path)
        built = True
        log.info("built demo store %s", path)
    return KnowledgeStore.open(
        path, embedding_model=embedder.model_id, dim=embedder.dim, create=False
    ), built
