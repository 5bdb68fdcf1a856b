"""Central side: a source folder (or an existing store) → one signed pack file.

``build_pack`` ingests the folder with ``runtime.knowledge.ingest.ingest_paths`` into a
temporary store (chunk + embed), picks smoke questions (``smoke.yaml`` in the folder, or
generated from the documents and kept only when the built store answers them), then
``export_pack`` streams the store into sections of at most CHUNKS_PER_PART chunks and
signs the manifest.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime import __version__ as RUNTIME_VERSION
from runtime.errors import PackError, PackFormatError

from .format import (
    CHUNKS_PER_PART,
    FORMAT_VERSION,
    PACK_ID_RE,
    EmbeddingBinding,
    PackWriter,
    encode_chunks,
    encode_documents,
    encode_faq,
    encode_smoke,
    encode_vectors,
    pack_obj,
    safe_relpath,
)

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
SMOKE_FILE = "smoke.yaml"


def _pack_path(source_path: str, root: Path | None) -> str:
    p = Path(source_path)
    if p.is_absolute() and root is not None:
        try:
            p = p.resolve().relative_to(root.resolve())
        except ValueError:
            raise PackFormatError(
                f"document {source_path} is outside the source folder {root}",
                hint="build packs from one folder holding every document",
            ) from None
    return safe_relpath(p.as_posix(), f"document {source_path}")


def export_pack(
    store: Any,
    out: Path,
    *,
    pack_id: str,
    version: int,
    sign: Callable,
    binding: EmbeddingBinding,
    smoke: Sequence[dict[str, Any]],
    smoke_vectors: np.ndarray,
    locales: Sequence[str],
    expires_days: float = 90.0,
    created: int | None = None,
    expires: int | None = None,
    title: str = "",
    min_runtime: str = RUNTIME_VERSION,
    prompts: dict[str, str] | None = None,
    source_root: Path | None = None,
    progress: Progress | None = None,
) -> bytes:
    """Write ``store``'s documents, chunks, vectors and FAQ as a signed pack; returns the manifest bytes."""  # noqa: E501
    if not PACK_ID_RE.match(pack_id):
        raise PackFormatError(
            f"pack id {pack_id!r} is not valid",
            hint="use lowercase letters, digits, '.', '_' or '-', up to 64 characters",
        )
    if store.embedding_model != binding.model_id or store.dim != binding.dim:
        raise PackFormatError(
            f"store {store.path} holds {store.embedding_model} ({store.dim}-d) vectors, "
            f"not {binding.model_id} ({binding.dim}-d)",
            hint="build with the bound embedder",
        )
    out = Path(out)
    writer = PackWriter(out.parent)
    try:
        docs, index = [], {}
        for doc_id, d in store.iter_documents():
            index[doc_id] = len(docs)
            docs.append(
                {
                    "source_path": _pack_path(d.source_path, source_root),
                    "title": d.title,
                    "language": d.language,
                    "content_hash": d.content_hash,
                    "category": d.category,
                    "meta": d.meta,
                }
            )
        writer.add("documents", encode_documents(docs))
        n_docs = len(docs)
        del docs
        stats = store.stats()
        part: list = []
        vecs: list = []
        parts, total, seen, last = 0, 0, set(), None

        def flush() -> None:
            nonlocal parts, part, vecs
            if part:
                writer.add(f"chunks.{parts:04d}", encode_chunks(part))
                writer.add(f"embeddings.{parts:04d}", encode_vectors(np.stack(vecs)))
                parts += 1
                part, vecs = [], []

        for _cid, doc_id, chunk, vec in store.iter_chunks():
            di = index[doc_id]
            if di != last:
                if di in seen:
                    raise PackError(
                        f"store {store.path} returned the chunks of one document out of order",
                        hint="this is a bug in the store's iter_chunks order; report it",
                    )
                seen.add(di)
                last = di
            part.append((di, chunk))
            vecs.append(np.asarray(vec, dtype=np.float32))
            total += 1
            if len(part) == CHUNKS_PER_PART:
                flush()
                if progress:
                    progress("export", total, stats["chunks"])
        flush()
        faq, faq_vecs = [], []
        for entry, v in store.iter_faq():
            faq.append(entry)
            faq_vecs.append(np.asarray(v, dtype=np.float32).reshape(len(entry.questions), -1))
        n_questions = sum(len(e.questions) for e in faq)
        if faq:
            writer.add("faq", encode_faq(faq))
            writer.add("faq_embeddings", encode_vectors(np.vstack(faq_vecs)))
        if prompts:
            writer.add("prompts", pack_obj({str(k): str(v) for k, v in prompts.items()}))
        items = [
            {
                "question": s["question"],
                "expected_source": s["expected_source"],
                "language": s.get("language", locales[0]),
            }
            for s in smoke
        ]
        writer.add("smoke", encode_smoke(items, smoke_vectors))
        now = int(time.time()) if created is None else int(created)
        manifest = {
            "format": FORMAT_VERSION,
            "pack_id": pack_id,
            "version": int(version),
            "created": now,
            "expires": int(expires) if expires is not None else now + int(expires_days * 86400),
            "title": title,
            "compat": {"locales": list(locales), "min_runtime": min_runtime},
            "embedding": binding.model_dump(),
            "counts": {
                "documents": n_docs,
                "chunks": total,
                "faq_entries": len(faq),
                "faq_questions": n_questions,
                "smoke": len(items),
            },
        }
        return writer.finish(out, manifest, sign)
    except BaseException:
        writer.abort()
        raise


def _read_smoke_file(path: Path) -> list[dict[str, Any]]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(data, list) or not all(
        isinstance(x, dict) and "question" in x and "source" in x for x in data
    ):
        raise PackFormatError(
            f"{path}: expected a list of {{question, source, language?}}",
            hint="see docs/packs.md, 'Smoke questions'",
        )
    return [
        {
            "question": str(x["question"]),
            "expected_source": str(x["source"]),
            "language": str(x.get("language", "")),
        }
        for x in data
    ]


def auto_smoke(store: Any, embedder: Any, *, count: int = 8, k: int = 5) -> list[dict[str, Any]]:
    """Smoke questions from the documents themselves: a passage's opening words, kept only
    when the store finds that passage's document in its top ``k``."""
    firsts: dict[int, Any] = {}
    for _cid, doc_id, chunk, _v in store.iter_chunks():
        if doc_id not in firsts and len(chunk.text.strip()) >= 8:
            firsts[doc_id] = chunk
    docs = {doc_id: d for doc_id, d in store.iter_documents()}
    ids = sorted(firsts)
    step = max(1, len(ids) // count)
    out = []
    for doc_id in ids[::step][:count]:
        chunk = firsts[doc_id]
        words = " ".join(chunk.text.split())[:80]
        vec = embedder.embed_batch([words])[0]
        hits = store.search(words, vec, k=k, mode="hybrid")
        if any(h.citation.source_path == docs[doc_id].source_path for h in hits):
            out.append(
                {
                    "question": words,
                    "expected_source": docs[doc_id].source_path,
                    "language": chunk.language,
                }
            )
    return out


def build_pack(
    source: Path,
    out: Path,
    *,
    embedder: Any,
    binding: EmbeddingBinding,
    sign: Callable,
    pack_id: str,
    version: int,
    locales: Sequence[str],
    expires_days: float = 90.0,
    title: str = "",
    chunking: Any = None,
    progress: Progress | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Ingest ``source`` into a temporary store and export it as a signed pack at ``out``."""
    from runtime.knowledge.ingest import ingest_paths
    from runtime.knowledge.store import KnowledgeStore

    source = Path(source)
    if not source.is_dir():
        raise PackFormatError(
            f"pack source {source} is not a folder", hint="give the folder holding the documents"
        )
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="kiosk-pack-build-") as tmp:
        store = KnowledgeStore.open(
            Path(tmp) / "build.sqlite", embedding_model=binding.model_id, dim=binding.dim
        )
        try:
            paths = sorted(
                p for p in source.iterdir() if p.name != SMOKE_FILE and not p.name.startswith(".")
            )
            report = ingest_paths(
                store,
                paths,
                embedder,
                chunking=chunking,
                pack_id=pack_id,
                pack_version=version,
                progress=(lambda done, total, _file: progress("ingest", done, total))
                if progress
                else None,
            )
            if getattr(report, "all_failed", False):
                raise PackFormatError(
                    f"no document in {source} could be ingested", hint="see the ingest report"
                )
            smoke_file = source / SMOKE_FILE
            if smoke_file.is_file():
                smoke = _read_smoke_file(smoke_file)
                for s in smoke:
                    s["language"] = s["language"] or locales[0]
            else:
                smoke = auto_smoke(store, embedder)
            for s in smoke:
                s["expected_source"] = _pack_path(s["expected_source"], source)
            if not smoke:
                raise PackFormatError(
                    f"no smoke question could be made for {source}",
                    hint=f"write {SMOKE_FILE} with questions and their expected source files",
                )
            vectors = embedder.embed_batch([s["question"] for s in smoke])
            manifest = export_pack(
                store,
                out,
                pack_id=pack_id,
                version=version,
                sign=sign,
                binding=binding,
                smoke=smoke,
                smoke_vectors=vectors,
                locales=locales,
                expires_days=expires_days,
                title=title,
                source_root=source,
                progress=progress,
            )
            stats = store.stats()
        finally:
            store.close()
    return {
        "path": str(out),
        "manifest_bytes": len(manifest),
        "documents": stats["documents"],
        "chunks": stats["chunks"],
        "faq_entries": stats["faq_entries"],
        "smoke": len(smoke),
        "report": report,
    }
