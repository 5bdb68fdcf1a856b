"""Deterministic synthetic knowledge for benchmarks and tests: N documents of made-up
service-hall prose, chunked and embedded with whatever embedder is given.

Real ingestion is exercised by ``build_pack``; this exists so the pack pipeline can be
measured at 1k/10k/50k chunks without depending on how a parser splits real files.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "sa",
    "tu",
    "vor",
    "en",
    "di",
    "pa",
    "shu",
    "ne",
    "ol",
    "ri",
    "ta",
    "ze",
]
_TOPICS = [
    "permit",
    "passport",
    "parking",
    "payment",
    "queue",
    "appointment",
    "license",
    "refund",
    "tax",
    "pension",
    "housing",
    "library",
    "clinic",
    "visa",
    "address",
    "certificate",
]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(
        "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(n)
    )


def sample_records(
    n_docs: int, chunks_per_doc: int, *, seed: int = 0, tag: str = ""
) -> list[tuple[Any, list[Any]]]:
    """[(DocumentRecord, [ChunkRecord, ...]), ...] with distinct, searchable text per document."""
    from runtime.knowledge.records import ChunkRecord, DocumentRecord

    out = []
    for d in range(n_docs):
        rng = random.Random(f"{seed}:{d}")
        topic = _TOPICS[d % len(_TOPICS)]
        key = f"{topic}{d}{tag}"
        chunks, pos = [], 0
        for c in range(chunks_per_doc):
            text = f"{key} counter {d} rule {c}: {_words(rng, 40)}."
            chunks.append(
                ChunkRecord(
                    text=text,
                    section_path=(f"{topic.title()} {d}", f"Part {c}"),
                    char_start=pos,
                    char_end=pos + len(text),
                    ordinal=c,
                    language="en",
                )
            )
            pos += len(text) + 1
        body = "\n".join(c.text for c in chunks)
        doc = DocumentRecord(
            source_path=f"docs/{topic}-{d:05d}.md",
            title=f"{topic.title()} guide {d}",
            language="en",
            content_hash=hashlib.sha256(body.encode()).hexdigest(),
            category=topic,
        )
        out.append((doc, chunks))
    return out


def fill_store(
    store: Any, embedder: Any, records: list[tuple[Any, list[Any]]], batch: int = 256
) -> None:
    for doc, chunks in records:
        vecs = [
            embedder.embed_batch([c.text for c in chunks[i : i + batch]])
            for i in range(0, len(chunks), batch)
        ]
        store.add_document(doc, chunks, np.vstack(vecs))


def sample_smoke(
    records: list[tuple[Any, list[Any]]], embedder: Any, count: int = 4
) -> tuple[list[dict], np.ndarray]:
    """Smoke questions: a document's unique key words, expecting that document."""
    step = max(1, len(records) // count)
    items = []
    for doc, chunks in records[::step][:count]:
        items.append(
            {
                "question": " ".join(chunks[0].text.split()[:3]),
                "expected_source": doc.source_path,
                "language": "en",
            }
        )
    return items, embedder.embed_batch([i["question"] for i in items])


def make_sample_pack(
    out: Path,
    work: Path,
    *,
    embedder: Any,
    binding: Any,
    sign: Any,
    pack_id: str,
    version: int,
    n_docs: int = 6,
    chunks_per_doc: int = 3,
    seed: int = 0,
    tag: str = "",
    **kw: Any,
) -> bytes:
    """Build a store of synthetic records in ``work`` and export it as a signed pack at ``out``."""
    from runtime.knowledge.store import KnowledgeStore

    from .build import export_pack

    records = sample_records(n_docs, chunks_per_doc, seed=seed, tag=tag)
    db = Path(work) / f"sample-{pack_id}-{version}-{seed}{tag}.sqlite"
    db.unlink(missing_ok=True)
    with KnowledgeStore.open(db, embedding_model=binding.model_id, dim=binding.dim) as store:
        fill_store(store, embedder, records)
        smoke, vecs = sample_smoke(records, embedder)
        manifest = export_pack(
            store,
            out,
            pack_id=pack_id,
            version=version,
            sign=sign,
            binding=binding,
            smoke=smoke,
            smoke_vectors=vecs,
            locales=kw.pop("locales", ["en"]),
            **kw,
        )
    db.unlink(missing_ok=True)
    return manifest


class PackKit:
    """A publisher in a box for tests and benchmarks: one key, one embedder, numbered packs."""

    def __init__(
        self, work: Path, embedder: Any, *, key: Any = None, pack_id: str = "demo"
    ) -> None:
        from .binding import binding_for
        from .signing import generate_key

        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.key = key or generate_key()
        self.binding = binding_for(embedder.model_id, embedder.dim)
        self.pack_id = pack_id

    @property
    def public_key(self) -> str:
        from .signing import public_key_text

        return public_key_text(self.key)

    def sign(self, message: bytes) -> tuple[bytes, bytes]:
        from .signing import signer

        return signer(self.key)(message)

    def make(self, version: int, *, name: str | None = None, **kw: Any) -> Path:
        """A signed pack at work/<name>; keyword arguments go to make_sample_pack/export_pack."""
        out = self.work / (name or f"{kw.get('pack_id', self.pack_id)}-v{version}.kpack")
        kw.setdefault("pack_id", self.pack_id)
        kw.setdefault("binding", self.binding)
        kw.setdefault("sign", self.sign)
        make_sample_pack(out, self.work, embedder=self.embedder, version=version, **kw)
        return out

    def settings(self, **kw: Any):
        from .install import PackSettings

        kw.setdefault("configured_keys", [self.public_key])
        kw.setdefault("binding", self.binding)
        kw.setdefault("locales", ("en",))
        return PackSettings(**kw)
