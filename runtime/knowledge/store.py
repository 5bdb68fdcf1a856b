"""KnowledgeStore: documents, chunks, FAQ and their vectors in one SQLite file.

One file holds everything (documents, chunks with their citations, an FTS5
index, sqlite-vec ``vec0`` tables for chunk and FAQ-paraphrase vectors, the FAQ)
plus ``store_meta`` naming the embedding model and dimension that built it; a
store refuses vectors or queries from another model (:class:`StoreMismatchError`)
because vectors from two models share no space.

Every write is one transaction, so readers (other processes included: WAL) see a
document with all its chunks or not at all, and a rejected input changes
nothing. Exact kNN runs in numpy over an in-memory copy of the vectors
(``vector_index.py``), rebuilt from SQLite whenever the ``generation`` counter
that every write bumps has moved.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from runtime.errors import (
    KnowledgeError,
    StoreCorruptError,
    StoreMismatchError,
    StoreOpenError,
    StoreReadOnlyError,
    VectorError,
)

from . import retrieval
from .connection import Connection, is_corruption, open_connection
from .migrations import SCHEMA_VERSION, MigrationContext, applied_version, migrate
from .records import ChunkRecord, Citation, DocumentRecord, FaqHit, FaqRecord, Hit, SearchFilters
from .text import FTS_SCHEMES, fts_document, normalize
from .vector_index import VectorIndex

log = logging.getLogger(__name__)

DEFAULT_FTS_SCHEME = "jieba"  # chosen by `kiosk eval retrieval`; see docs/knowledge.md
DEFAULT_KEYWORD_BUDGET = 2000  # rows ranked by BM25 per keyword query (docs/knowledge.md)
SearchMode = Literal["hybrid", "keyword", "vector"]
FaqMode = Literal["vector", "keyword", "hybrid"]
DEFAULT_FAQ_MODE: FaqMode = "vector"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class KnowledgeStore:
    """The knowledge base of one kiosk (or one pack being built). Open with :meth:`open`."""

    def __init__(
        self,
        conn: Connection,
        *,
        embedding_model: str,
        dim: int,
        fts_scheme: str,
        schema_version: int,
    ):
        self._conn = conn
        self.embedding_model = embedding_model
        self.dim = dim
        self.fts_scheme = fts_scheme
        self.schema_version = schema_version
        self.vector_backend: Literal["numpy", "sqlite-vec"] = "numpy"
        self._index_lock = threading.Lock()
        self._chunk_index: VectorIndex | None = None
        self._faq_index: VectorIndex | None = None
        self._data_version: int | None = None
        self._count_cache: tuple[int, int] | None = None
        # Most rows one keyword query may rank with BM25 (retrieval.budgeted_match); None: no limit.
        self.keyword_budget: int | None = DEFAULT_KEYWORD_BUDGET

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path,
        *,
        embedding_model: str,
        dim: int,
        create: bool = True,
        readonly: bool = False,
        fts_scheme: str | None = None,
    ) -> KnowledgeStore:
        """Open (create, migrate) the store at ``path`` for vectors of ``embedding_model``/``dim``.

        ``fts_scheme`` only matters for a new file (jieba | bigram | trigram); an
        existing file keeps the scheme it was built with.
        """
        if not embedding_model or int(dim) <= 0:
            raise KnowledgeError(
                f"knowledge store {path}: embedding model {embedding_model!r} / dim {dim} is "
                "not valid",
                hint="pass the embedder's model_id and dim",
            )
        if fts_scheme is not None and fts_scheme not in FTS_SCHEMES:
            raise KnowledgeError(
                f"unknown FTS scheme {fts_scheme!r}", hint=f"use one of {', '.join(FTS_SCHEMES)}"
            )
        path = Path(path)
        conn = open_connection(path, create=create, readonly=readonly)
        try:
            meta = _read_meta(conn)
            if meta:
                stored_model, stored_dim = (
                    meta.get("embedding_model", ""),
                    int(meta.get("dim", "0")),
                )
                if stored_model != embedding_model or stored_dim != int(dim):
                    raise StoreMismatchError(
                        f"knowledge store {path} was built with embedding model "
                        f"{stored_model!r} ({stored_dim}-d), "
                        f"not {embedding_model!r} ({int(dim)}-d)",
                        hint="use the embedder that built it, or rebuild the store (re-ingest "
                        "/ reinstall the pack)",
                    )
                scheme = meta.get("fts_scheme", DEFAULT_FTS_SCHEME)
            else:
                if _has_foreign_tables(conn):
                    raise StoreOpenError(
                        f"{path} is an SQLite database but not a knowledge store",
                        hint="point [knowledge] database at a new or existing knowledge store file",
                    )
                if readonly:
                    raise StoreOpenError(
                        f"knowledge store {path} is empty",
                        hint="ingest documents or install a pack first",
                    )
                scheme = fts_scheme or DEFAULT_FTS_SCHEME
            version = migrate(conn, MigrationContext(embedding_model, int(dim), scheme))
        except KnowledgeError:
            conn.close()
            raise
        except Exception as exc:
            conn.close()
            if is_corruption(exc):
                raise StoreCorruptError(
                    f"knowledge store {path} is corrupt ({exc})",
                    hint="delete the file and ingest again, or reinstall the knowledge pack",
                ) from exc
            raise StoreOpenError(
                f"cannot open knowledge store {path}: {exc}", hint="check the file"
            ) from exc
        return cls(
            conn,
            embedding_model=embedding_model,
            dim=int(dim),
            fts_scheme=scheme,
            schema_version=version,
        )

    @property
    def path(self) -> Path:
        return self._conn.path

    @property
    def readonly(self) -> bool:
        return self._conn.readonly

    @property
    def connection(self) -> Connection:
        """The underlying connection (benchmarks and integrity tools; not for ad-hoc writes)."""
        return self._conn

    def close(self) -> None:
        self._conn.close()
        self._chunk_index = None
        self._faq_index = None

    def __enter__(self) -> KnowledgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- validation --------------------------------------------------------------------
    def _writable(self) -> None:
        if self._conn.readonly:
            raise StoreReadOnlyError(
                f"knowledge store {self.path} is open read-only",
                hint="open it with readonly=False to change it",
            )

    def _check_vectors(self, vectors: Any, rows: int, what: str) -> np.ndarray:
        try:
            arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise VectorError(
                f"{what}: vectors are not numeric ({exc})", hint="pass a float32 array"
            ) from None
        if arr.ndim == 1 and rows == 1:
            arr = arr.reshape(1, -1)
        if rows == 0 and arr.size == 0:  # a document with no chunks (e.g. only a title)
            return np.zeros((0, self.dim), dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != rows:
            raise VectorError(
                f"{what}: expected {rows} vectors of {self.dim} dims, got shape {tuple(arr.shape)}",
                hint="pass one vector per chunk/question, shape (n, dim)",
            )
        if arr.shape[1] != self.dim:
            raise VectorError(
                f"{what}: vectors have {arr.shape[1]} dims but store {self.path} holds "
                f"{self.dim}-d vectors "
                f"of {self.embedding_model!r}",
                hint="embed with the store's embedding model",
            )
        if not np.isfinite(arr).all():
            raise VectorError(
                f"{what}: vectors contain NaN or infinity", hint="check the embedder's output"
            )
        if rows and (np.linalg.norm(arr, axis=1) == 0).any():
            raise VectorError(
                f"{what}: a vector is all zeros (no direction)", hint="check the embedder's output"
            )
        return np.ascontiguousarray(arr)

    def _check_query_vector(self, vector: np.ndarray | None) -> np.ndarray | None:
        if vector is None:
            return None
        arr = np.asarray(vector, dtype=np.float32).reshape(-1)
        if arr.shape[0] != self.dim:
            raise VectorError(
                f"query vector has {arr.shape[0]} dims but store {self.path} holds "
                f"{self.dim}-d vectors "
                f"of {self.embedding_model!r}",
                hint="embed the question with the store's embedding model",
            )
        if not np.isfinite(arr).all():
            raise VectorError(
                "query vector contains NaN or infinity", hint="check the embedder's output"
            )
        return arr

    @staticmethod
    def _check_chunks(doc: DocumentRecord, chunks: Sequence[ChunkRecord]) -> None:
        for c in chunks:
            if not (0 <= c.char_start <= c.char_end):
                raise KnowledgeError(
                    f"document {doc.source_path}: chunk {c.ordinal} has offsets "
                    f"{c.char_start}..{c.char_end}",
                    hint="chunk offsets must satisfy 0 <= char_start <= char_end",
                )

    # -- writes ------------------------------------------------------------------------
    def _bump_generation(self) -> None:
        self._conn.execute(
            "UPDATE store_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
        )

    @contextlib.contextmanager
    def batch(self) -> Iterator[KnowledgeStore]:
        """Group many writes into one transaction (bulk builds: packs, benchmarks, big ingests).

        Inside, each ``add_document``/``add_faq`` joins this transaction; an
        exception anywhere rolls back every write of the batch.
        """
        self._writable()
        try:
            with self._conn.transaction():
                yield self
        finally:
            self._chunk_index = None
            self._faq_index = None

    def has_document(self, content_hash: str) -> bool:
        return bool(
            self._conn.execute(
                "SELECT 1 FROM documents WHERE content_hash = ? LIMIT 1", (content_hash,)
            )
        )

    def add_document(
        self, doc: DocumentRecord, chunks: Sequence[ChunkRecord], vectors: np.ndarray
    ) -> int:
        """Add ``doc`` with its chunks and vectors in one transaction; returns the document id.

        Same ``source_path`` and same ``content_hash``: nothing changes (the
        existing id is returned). Same path, other hash: the old document is
        replaced. Invalid input raises before anything is written.
        """
        self._writable()
        chunks = list(chunks)
        arr = self._check_vectors(vectors, len(chunks), f"document {doc.source_path}")
        self._check_chunks(doc, chunks)
        conn = self._conn
        with conn.transaction():
            existing = conn.execute(
                "SELECT id, content_hash FROM documents WHERE source_path = ?", (doc.source_path,)
            )
            if existing and existing[0][1] == doc.content_hash:
                return int(existing[0][0])
            if existing:
                self._delete_document_rows(int(existing[0][0]))
            doc_id = _insert_document(conn, doc)
            first = int(conn.scalar("SELECT coalesce(max(id), 0) FROM chunks")) + 1
            ids = list(range(first, first + len(chunks)))
            conn.executemany(
                "INSERT INTO chunks (id, doc_id, ordinal, text, section_path, char_start, "
                "char_end, page, language, "
                "embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i,
                        doc_id,
                        c.ordinal,
                        c.text,
                        json.dumps(list(c.section_path), ensure_ascii=False),
                        c.char_start,
                        c.char_end,
                        c.page,
                        c.language or doc.language,
                        arr[j].tobytes(),
                    )
                    for j, (i, c) in enumerate(zip(ids, chunks, strict=True))
                ],
            )
            conn.executemany(
                "INSERT INTO chunks_fts (rowid, heading, body) VALUES (?, ?, ?)",
                [
                    (
                        i,
                        fts_document(" ".join(c.section_path), self.fts_scheme),
                        fts_document(c.text, self.fts_scheme),
                    )
                    for i, c in zip(ids, chunks, strict=True)
                ],
            )
            conn.executemany(
                "INSERT INTO chunk_vectors (rowid, embedding, language, category, pack_id) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (i, arr[j].tobytes(), c.language or doc.language, doc.category, doc.pack_id)
                    for j, (i, c) in enumerate(zip(ids, chunks, strict=True))
                ],
            )
            self._bump_generation()
        self._chunk_index = None
        return doc_id

    def delete_document(self, source_path: str) -> bool:
        """Remove a document and its chunks; False when no such document."""
        self._writable()
        with self._conn.transaction():
            row = self._conn.execute(
                "SELECT id FROM documents WHERE source_path = ?", (source_path,)
            )
            if not row:
                return False
            self._delete_document_rows(int(row[0][0]))
            self._bump_generation()
        self._chunk_index = None
        return True

    def _delete_document_rows(self, doc_id: int) -> None:
        conn = self._conn
        ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        conn.executemany("DELETE FROM chunks_fts WHERE rowid = ?", [(i,) for i in ids])
        conn.executemany("DELETE FROM chunk_vectors WHERE rowid = ?", [(i,) for i in ids])
        conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

    def add_faq(self, entries: Sequence[FaqRecord], vectors: Sequence[np.ndarray]) -> None:
        """Add FAQ entries; ``vectors[i]`` holds one row per paraphrase of ``entries[i]``.

        An entry whose ``faq_id`` exists already replaces it. All or nothing.
        """
        self._writable()
        entries = list(entries)
        vectors = list(vectors)
        if len(vectors) != len(entries):
            raise VectorError(
                f"add_faq: {len(entries)} entries but {len(vectors)} vector arrays",
                hint="pass one (len(questions), dim) array per entry",
            )
        checked = []
        for e, v in zip(entries, vectors, strict=True):
            if not e.questions:
                raise KnowledgeError(
                    f"FAQ entry {e.faq_id!r} has no question", hint="give at least one question"
                )
            checked.append(self._check_vectors(v, len(e.questions), f"FAQ entry {e.faq_id!r}"))
        conn = self._conn
        with conn.transaction():
            for e, arr in zip(entries, checked, strict=True):
                old = conn.execute("SELECT id FROM faq_entries WHERE faq_id = ?", (e.faq_id,))
                if old:
                    self._delete_faq_rows(int(old[0][0]))
                conn.execute(
                    "INSERT INTO faq_entries (faq_id, answer, language, category, source, "
                    "pack_id, pack_version) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.faq_id,
                        e.answer,
                        e.language,
                        e.category,
                        e.source,
                        e.pack_id,
                        int(e.pack_version),
                    ),
                )
                entry_id = int(conn.scalar("SELECT last_insert_rowid()"))
                for ordinal, (q, vec) in enumerate(zip(e.questions, arr, strict=True)):
                    conn.execute(
                        "INSERT INTO faq_questions (entry_id, ordinal, question, normalized, "
                        "embedding) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (entry_id, ordinal, q, normalize(q), vec.tobytes()),
                    )
                    qid = int(conn.scalar("SELECT last_insert_rowid()"))
                    conn.execute(
                        "INSERT INTO faq_fts (rowid, body) VALUES (?, ?)",
                        (qid, fts_document(q, self.fts_scheme)),
                    )
                    conn.execute(
                        "INSERT INTO faq_vectors (rowid, embedding) VALUES (?, ?)",
                        (qid, vec.tobytes()),
                    )
            self._bump_generation()
        self._faq_index = None

    def _delete_faq_rows(self, entry_id: int) -> None:
        conn = self._conn
        ids = [
            r[0]
            for r in conn.execute("SELECT id FROM faq_questions WHERE entry_id = ?", (entry_id,))
        ]
        conn.executemany("DELETE FROM faq_fts WHERE rowid = ?", [(i,) for i in ids])
        conn.executemany("DELETE FROM faq_vectors WHERE rowid = ?", [(i,) for i in ids])
        conn.execute("DELETE FROM faq_questions WHERE entry_id = ?", (entry_id,))
        conn.execute("DELETE FROM faq_entries WHERE id = ?", (entry_id,))

    # -- in-memory vector indexes --------------------------------------------------------
    def _refresh(self) -> None:
        """Drop the in-memory indexes when another connection changed the file."""
        version = int(self._conn.scalar("PRAGMA data_version"))
        if self._data_version is not None and version != self._data_version:
            gen = self._generation()
            if self._chunk_index is not None and self._chunk_index.generation != gen:
                self._chunk_index = None
            if self._faq_index is not None and self._faq_index.generation != gen:
                self._faq_index = None
        self._data_version = version

    def _generation(self) -> int:
        return int(self._conn.scalar("SELECT value FROM store_meta WHERE key = 'generation'"))

    def warm(self) -> None:
        """Load the in-memory vector indexes now (server start), not on the first question."""
        self.chunk_index()
        self.faq_index()

    def chunk_index(self) -> VectorIndex:
        """The exact in-memory index of chunk vectors (built from SQLite on first use)."""
        self._refresh()
        index = self._chunk_index
        if index is not None:
            return index
        with self._index_lock:
            if self._chunk_index is None:
                gen = self._generation()
                rows = self._conn.execute(
                    "SELECT c.id, c.embedding, c.language, d.category, d.pack_id FROM chunks c "
                    "JOIN documents d ON d.id = c.doc_id"
                )
                self._chunk_index = _index_from_rows(
                    rows, self.dim, gen, ("language", "category", "pack_id")
                )
            return self._chunk_index

    def faq_index(self) -> VectorIndex:
        self._refresh()
        index = self._faq_index
        if index is not None:
            return index
        with self._index_lock:
            if self._faq_index is None:
                gen = self._generation()
                rows = self._conn.execute(
                    "SELECT q.id, q.embedding, e.language FROM faq_questions q JOIN "
                    "faq_entries e ON e.id = q.entry_id"
                )
                self._faq_index = _index_from_rows(rows, self.dim, gen, ("language",))
            return self._faq_index

    # -- retrieval ---------------------------------------------------------------------
    def vector_search(
        self, query_vector: np.ndarray, *, k: int, filters: SearchFilters | None = None
    ) -> list[tuple[int, float]]:
        """Exact kNN: (chunk id, cosine similarity) best first."""
        qv = self._check_query_vector(query_vector)
        if self.vector_backend == "sqlite-vec":
            return retrieval.sqlite_vec_search(self._conn, qv, limit=k, filters=filters)
        return self._numpy_search(self.chunk_index(), qv, k, filters)

    @staticmethod
    def _numpy_search(
        index: VectorIndex, qv: np.ndarray, k: int, filters: SearchFilters | None
    ) -> list[tuple[int, float]]:
        mask = None
        if filters is not None:
            mask = index.filter_mask(
                language=filters.languages, category=filters.categories, pack_id=filters.pack_ids
            )
        ids, sims = index.search(qv, k, mask)
        return [(int(i), float(s)) for i, s in zip(ids, sims, strict=True)]

    def keyword_search(
        self, query: str, *, k: int, filters: SearchFilters | None = None, complete: bool = True
    ) -> list[tuple[int, float]]:
        """FTS5 BM25: (chunk id, bm25) best first (bm25 negative, lower is better).

        ``complete=False`` lets a question made only of very common terms return
        nothing instead of ranking most of the store (used by hybrid search).
        """
        return retrieval.keyword_search(
            self._conn,
            query,
            self.fts_scheme,
            limit=k,
            filters=filters,
            budget=self.keyword_budget,
            table_rows=self._chunk_count(),
            complete=complete,
        )

    def vocabulary(self, *, limit: int = 200, max_chars: int = 40) -> list[str]:
        """Names this knowledge uses (document titles, section headings), shortest first.

        The speech recogniser's prompt is built from these, so "社会保障卡" or "Riverside
        City Service Hall" are heard as the documents spell them.
        """
        import json

        self._refresh()
        names = {str(r[0]) for r in self._conn.execute("SELECT title FROM documents")}
        for (path,) in self._conn.execute("SELECT DISTINCT section_path FROM chunks"):
            try:
                parts = json.loads(path)
            except (TypeError, ValueError):
                continue
            names.update(str(p) for p in parts if isinstance(p, str))
        kept = sorted((n.strip() for n in names if 0 < len(n.strip()) <= max_chars), key=len)
        return kept[:limit]

    def unknown_terms(self, terms: Sequence[str]) -> list[str]:
        """The search terms that occur in no chunk and no FAQ entry of this store.

        A question whose content words the knowledge never uses ("library", "离婚") is
        likely about something the knowledge does not cover, however close its
        embedding lands; the answer pipeline's relevance gate uses this.
        """
        from .text import quote_fts

        self._refresh()
        out: list[str] = []
        for term in terms:
            match = quote_fts(term)
            found = self._conn.scalar(
                "SELECT EXISTS (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ?) "
                "OR EXISTS (SELECT 1 FROM faq_fts WHERE faq_fts MATCH ?)",
                (match, match),
            )
            if not found:
                out.append(term)
        return out

    def _chunk_count(self) -> int:
        """Chunks in the store, cached per generation (decides whether keyword pruning matters)."""
        self._refresh()
        gen = self._generation()
        if self._count_cache is None or self._count_cache[0] != gen:
            self._count_cache = (gen, int(self._conn.scalar("SELECT count(*) FROM chunks")))
        return self._count_cache[1]

    def search(
        self,
        query: str,
        query_vector: np.ndarray | None,
        *,
        k: int = 5,
        mode: SearchMode = "hybrid",
        filters: SearchFilters | None = None,
        rrf_k: int = 60,
        candidates: int | None = None,
        rerank: retrieval.Rerank | None = None,
    ) -> list[Hit]:
        """Top-``k`` chunks for a question, with citations and scores.

        ``hybrid`` fuses keyword and vector rankings with RRF; with no
        ``query_vector`` (embedder down) it degrades to keyword only.
        ``candidates`` is how deep each ranking goes before fusion (default
        ``max(20, 4k)``); ``rerank`` reorders the fused candidates.
        """
        if mode not in retrieval.MODES:
            raise KnowledgeError(
                f"unknown search mode {mode!r}", hint=f"use one of {', '.join(retrieval.MODES)}"
            )
        if k <= 0:
            return []
        qv = self._check_query_vector(query_vector)
        if mode == "vector" and qv is None:
            raise VectorError(
                "vector search needs a query vector",
                hint="embed the question, or use mode='keyword'",
            )
        depth = max(k, candidates or max(20, 4 * k))
        keyword: list[tuple[int, float]] = []
        vector: list[tuple[int, float]] = []
        # Sequential on purpose: running the numpy scan in a worker thread beside FTS5 made
        # hybrid slower (10k chunks: 11 ms vs 1.9 + 4.8 ms apart), because the keyword half
        # (jieba, term probing) holds the GIL and the worker waits out the 5 ms switch interval.
        if mode in ("hybrid", "keyword"):
            keyword = self.keyword_search(
                query, k=depth, filters=filters, complete=mode == "keyword" or qv is None
            )
        if mode in ("hybrid", "vector") and qv is not None:
            vector = self.vector_search(qv, k=depth, filters=filters)
        kw_rank = {cid: (rank, bm) for rank, (cid, bm) in enumerate(keyword, start=1)}
        vec_rank = {cid: (rank, sim) for rank, (cid, sim) in enumerate(vector, start=1)}
        if mode == "keyword":
            fused = [(cid, -bm) for cid, bm in keyword]
        elif mode == "vector" or not keyword:
            fused = (
                [(cid, sim) for cid, sim in vector]
                if vector
                else [(cid, -bm) for cid, bm in keyword]
            )
        else:
            fused = retrieval.rrf_fuse([[c for c, _ in keyword], [c for c, _ in vector]], rrf_k)
        take = fused if rerank is not None else fused[:k]
        hits = self._hits([cid for cid, _ in take], dict(take), kw_rank, vec_rank)
        if rerank is not None:
            hits = rerank(query, qv, hits)
        return hits[:k]

    def _hits(
        self,
        ids: list[int],
        fused: dict[int, float],
        kw_rank: dict[int, tuple[int, float]],
        vec_rank: dict[int, tuple[int, float]],
    ) -> list[Hit]:
        if not ids:
            return []
        rows = self._conn.execute(
            "SELECT c.id, c.text, c.section_path, c.page, c.char_start, c.char_end, d.title, "
            "d.source_path, "
            "d.pack_id, d.pack_version FROM chunks c JOIN documents d ON d.id = c.doc_id "
            f"WHERE c.id IN ({', '.join('?' for _ in ids)})",
            ids,
        )
        by_id = {int(r[0]): r for r in rows}
        hits: list[Hit] = []
        for cid in ids:
            r = by_id.get(cid)
            if r is None:  # deleted between the two queries by another process
                continue
            scores: dict[str, float] = {}
            if cid in kw_rank:
                scores["keyword_rank"], scores["keyword_bm25"] = (
                    float(kw_rank[cid][0]),
                    kw_rank[cid][1],
                )
            if cid in vec_rank:
                scores["vector_rank"], scores["vector_similarity"] = (
                    float(vec_rank[cid][0]),
                    vec_rank[cid][1],
                )
            citation = Citation(
                document_title=r[6],
                source_path=r[7],
                section=" > ".join(json.loads(r[2])),
                page=r[3],
                char_start=int(r[4]),
                char_end=int(r[5]),
                pack_id=r[8],
                pack_version=int(r[9]),
            )
            hits.append(
                Hit(
                    chunk_id=cid,
                    text=r[1],
                    citation=citation,
                    score=float(fused[cid]),
                    scores=scores,
                )
            )
        return hits

    # -- FAQ -----------------------------------------------------------------------------
    def match_faq(
        self,
        question: str,
        question_vector: np.ndarray | None,
        *,
        k: int = 3,
        languages: tuple[str, ...] = (),
        mode: FaqMode | None = None,
        rrf_k: int = 60,
    ) -> list[FaqHit]:
        """FAQ entries for a question: exact normalised matches first (score 1.0), then the rest.

        After exact matches: ``vector`` ranks entries by the cosine of their
        best paraphrase; ``keyword`` by FTS5 BM25 over paraphrases; ``hybrid``
        fuses both with RRF (score still the best cosine). With no vector,
        keyword is used. Scores of keyword hits without a vector are
        ``x / (1 + x)`` of the BM25 magnitude ``x`` (in 0..1, not a cosine).
        """
        if k <= 0:
            return []
        mode = mode or DEFAULT_FAQ_MODE
        qv = self._check_query_vector(question_vector)
        lang_sql = f" AND e.language IN ({', '.join('?' for _ in languages)})" if languages else ""
        select = (
            "SELECT q.id, q.question, e.faq_id, e.answer, e.language, e.source, e.pack_id, "
            "e.pack_version "
            "FROM faq_questions q JOIN faq_entries e ON e.id = q.entry_id "
        )
        hits: list[FaqHit] = []
        seen: set[str] = set()

        def add(row: tuple, score: float, method: str) -> None:
            if row[2] in seen or len(hits) >= k:
                return
            seen.add(row[2])
            hits.append(
                FaqHit(
                    faq_id=row[2],
                    matched_question=row[1],
                    answer=row[3],
                    language=row[4],
                    score=score,
                    method=method,
                    source=row[5],
                    pack_id=row[6],
                    pack_version=int(row[7]),
                )  # type: ignore[arg-type]
            )

        norm = normalize(question)
        if norm:
            for row in self._conn.execute(
                select + f"WHERE q.normalized = ?{lang_sql} ORDER BY q.id", [norm, *languages]
            ):
                add(row, 1.0, "exact")
        if len(hits) >= k:
            return hits
        depth = max(20, 4 * k)
        vec_ranked: list[tuple[int, float]] = []
        kw_ranked: list[tuple[int, float]] = []
        if qv is not None and mode in ("vector", "hybrid") and self.vector_backend == "sqlite-vec":
            vec_ranked = self._faq_vec0_search(qv, depth * 4, languages)
        elif qv is not None and mode in ("vector", "hybrid"):
            index = self.faq_index()
            mask = index.filter_mask(language=languages) if languages else None
            ids, sims = index.search(qv, depth * 4, mask)  # several paraphrases per entry
            vec_ranked = [(int(i), float(s)) for i, s in zip(ids, sims, strict=True)]
        if qv is None or mode in ("keyword", "hybrid"):
            match = retrieval.keyword_query(question, self.fts_scheme)
            if match:
                kw_ranked = [
                    (int(r[0]), float(r[1]))
                    for r in self._conn.execute(
                        "SELECT f.rowid, f.rank FROM faq_fts f JOIN faq_questions q ON q.id = "
                        "f.rowid "
                        "JOIN faq_entries e ON e.id = q.entry_id WHERE faq_fts MATCH "
                        f"?{lang_sql} ORDER BY f.rank LIMIT ?",
                        [match, *languages, depth * 4],
                    )
                ]
        qids = list(dict.fromkeys([i for i, _ in vec_ranked] + [i for i, _ in kw_ranked]))
        if not qids:
            return hits
        rows = {
            int(r[0]): r
            for r in self._conn.execute(
                select + f"WHERE q.id IN ({', '.join('?' for _ in qids)})", qids
            )
        }
        cosine = dict(vec_ranked)
        if qv is not None and kw_ranked:
            missing = [i for i, _ in kw_ranked if i not in cosine]
            if missing:
                cosine.update(self._faq_cosines(missing, qv))

        # Per entry: best paraphrase in each ranking (rank lists over entries, not paraphrases).
        def entry_order(ranked: list[tuple[int, float]]) -> list[int]:
            order: dict[str, int] = {}
            for qid, _ in ranked:
                fid = rows[qid][2] if qid in rows else None
                if fid is not None and fid not in order:
                    order[fid] = qid
            return list(order.values())

        vec_entries = entry_order(vec_ranked)
        kw_entries = entry_order(kw_ranked)
        if mode == "hybrid" and vec_entries and kw_entries:
            fused = [qid for qid, _ in retrieval.rrf_fuse([vec_entries, kw_entries], rrf_k)]
            method = "vector"
        elif vec_entries and mode != "keyword":
            fused, method = vec_entries, "vector"
        else:
            fused, method = kw_entries, "keyword"
        bm25 = dict(kw_ranked)
        for qid in fused:
            if len(hits) >= k:
                break
            if qid not in rows:
                continue
            if qid in cosine:
                score = cosine[qid]
            else:
                x = -bm25.get(qid, 0.0)
                score = x / (1.0 + x) if x > 0 else 0.0
            add(rows[qid], float(score), method)
        return hits

    def faq_paraphrases(self, faq_id: str) -> tuple[str, ...]:
        """Every question phrasing of one FAQ entry, in stored order."""
        rows = self._conn.execute(
            "SELECT q.question FROM faq_questions q JOIN faq_entries e ON e.id = q.entry_id "
            "WHERE e.faq_id = ? ORDER BY q.id",
            [faq_id],
        )
        return tuple(r[0] for r in rows)

    def _faq_vec0_search(
        self, qv: np.ndarray, k: int, languages: tuple[str, ...]
    ) -> list[tuple[int, float]]:
        """FAQ kNN with sqlite-vec (no in-memory matrix: a one-off check such as a pack's smoke
        questions). faq_vectors has no language column, so a language filter over-fetches."""
        sql = "SELECT rowid, distance FROM faq_vectors WHERE embedding MATCH ? AND k = ?"
        q = np.asarray(qv, dtype=np.float32).tobytes()
        ranked = [(int(r[0]), 1.0 - float(r[1])) for r in self._conn.execute(sql, [q, k * 4])]
        if languages and ranked:
            ok = {
                int(r[0])
                for r in self._conn.execute(
                    "SELECT q.id FROM faq_questions q JOIN faq_entries e ON e.id = q.entry_id "
                    f"WHERE q.id IN ({', '.join('?' for _ in ranked)}) AND e.language IN "
                    f"({', '.join('?' for _ in languages)})",
                    [i for i, _ in ranked] + list(languages),
                )
            }
            ranked = [r for r in ranked if r[0] in ok]
        return ranked[:k]

    def _faq_cosines(self, qids: list[int], qv: np.ndarray) -> dict[int, float]:
        if self.vector_backend == "sqlite-vec":  # read just these vectors, not the whole matrix
            q = qv / (np.linalg.norm(qv) or 1.0)
            out = {}
            for i, blob in self._conn.execute(
                f"SELECT id, embedding FROM faq_questions WHERE id IN "
                f"({', '.join('?' for _ in qids)})",
                qids,
            ):
                v = np.frombuffer(blob, dtype=np.float32)
                out[int(i)] = float(v @ q / (np.linalg.norm(v) or 1.0))
            return out
        index = self.faq_index()
        rows = index.rows_of(qids)
        q = qv / (np.linalg.norm(qv) or 1.0)
        present = rows >= 0
        sims = index.matrix[rows[present]] @ q
        return {int(i): float(s) for i, s in zip(np.asarray(qids)[present], sims, strict=True)}

    # -- reading back --------------------------------------------------------------------
    def iter_documents(self) -> Iterator[tuple[int, DocumentRecord]]:
        for r in self._conn.iterate(
            "SELECT id, source_path, title, language, content_hash, category, pack_id, "
            "pack_version, meta "
            "FROM documents ORDER BY id"
        ):
            yield (
                int(r[0]),
                DocumentRecord(
                    source_path=r[1],
                    title=r[2],
                    language=r[3],
                    content_hash=r[4],
                    category=r[5],
                    pack_id=r[6],
                    pack_version=int(r[7]),
                    meta=json.loads(r[8]),
                ),
            )

    def iter_chunks(self) -> Iterator[tuple[int, int, ChunkRecord, np.ndarray]]:
        for r in self._conn.iterate(
            "SELECT c.id, c.doc_id, c.text, c.section_path, c.char_start, c.char_end, "
            "c.ordinal, c.language, c.page, "
            "c.embedding FROM chunks c ORDER BY c.id"
        ):
            chunk = ChunkRecord(
                text=r[2],
                section_path=tuple(json.loads(r[3])),
                char_start=int(r[4]),
                char_end=int(r[5]),
                ordinal=int(r[6]),
                language=r[7],
                page=r[8],
            )
            yield int(r[0]), int(r[1]), chunk, np.frombuffer(r[9], dtype=np.float32).copy()

    def iter_faq(self) -> Iterator[tuple[FaqRecord, np.ndarray]]:
        entries = self._conn.execute(
            "SELECT id, faq_id, answer, language, category, source, pack_id, pack_version FROM "
            "faq_entries ORDER BY id"
        )
        for e in entries:
            qs = self._conn.execute(
                "SELECT question, embedding FROM faq_questions WHERE entry_id = ? ORDER BY ordinal",
                (e[0],),
            )
            record = FaqRecord(
                faq_id=e[1],
                questions=tuple(q[0] for q in qs),
                answer=e[2],
                language=e[3],
                category=e[4],
                source=e[5],
                pack_id=e[6],
                pack_version=int(e[7]),
            )
            vecs = (
                np.stack([np.frombuffer(q[1], dtype=np.float32) for q in qs])
                if qs
                else np.zeros((0, self.dim), np.float32)
            )
            yield record, vecs

    def stats(self) -> dict[str, Any]:
        c = self._conn
        return {
            "path": str(self.path),
            "documents": int(c.scalar("SELECT count(*) FROM documents")),
            "chunks": int(c.scalar("SELECT count(*) FROM chunks")),
            "faq_entries": int(c.scalar("SELECT count(*) FROM faq_entries")),
            "faq_questions": int(c.scalar("SELECT count(*) FROM faq_questions")),
            "embedding_model": self.embedding_model,
            "dim": self.dim,
            "fts_scheme": self.fts_scheme,
            "schema_version": self.schema_version,
            "generation": self._generation(),
        }

    def integrity_check(self) -> None:
        """Raise :class:`StoreCorruptError` unless SQLite, FTS5 and the vector tables all agree."""
        c = self._conn
        try:
            result = [r[0] for r in c.execute("PRAGMA integrity_check")]
            if result != ["ok"]:
                raise StoreCorruptError(
                    f"knowledge store {self.path} fails SQLite's integrity check: "
                    f"{'; '.join(map(str, result[:5]))}",
                    hint="rebuild the store (re-ingest or reinstall the pack)",
                )
            if not c.readonly:
                c.execute("INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)")
                c.execute("INSERT INTO faq_fts (faq_fts, rank) VALUES ('integrity-check', 1)")
            problems = []
            for label, sql in (
                (
                    "chunks without a vector",
                    "SELECT count(*) FROM chunks WHERE id NOT IN (SELECT rowid FROM chunk_vectors)",
                ),
                (
                    "vectors without a chunk",
                    "SELECT count(*) FROM chunk_vectors WHERE rowid NOT IN (SELECT id FROM chunks)",
                ),
                (
                    "chunks missing from FTS",
                    "SELECT count(*) FROM chunks WHERE id NOT IN (SELECT rowid FROM chunks_fts)",
                ),
                (
                    "FTS rows without a chunk",
                    "SELECT count(*) FROM chunks_fts WHERE rowid NOT IN (SELECT id FROM chunks)",
                ),
                (
                    "FAQ questions without a vector",
                    "SELECT count(*) FROM faq_questions WHERE id NOT IN (SELECT rowid FROM "
                    "faq_vectors)",
                ),
                (
                    "FAQ vectors without a question",
                    "SELECT count(*) FROM faq_vectors WHERE rowid NOT IN (SELECT id FROM "
                    "faq_questions)",
                ),
                (
                    "chunk vectors that differ from their vec0 copy",
                    "SELECT count(*) FROM chunks c JOIN chunk_vectors v ON v.rowid = c.id "
                    "WHERE v.embedding != c.embedding",
                ),
                (
                    "FAQ vectors that differ from their vec0 copy",
                    "SELECT count(*) FROM faq_questions q JOIN faq_vectors v ON v.rowid = q.id "
                    "WHERE v.embedding != q.embedding",
                ),
                (
                    "chunks of missing documents",
                    "SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)",
                ),
            ):
                n = int(c.scalar(sql))
                if n:
                    problems.append(f"{n} {label}")
            if self._chunk_index is not None and self._chunk_index.generation == self._generation():
                if self._chunk_index.size != int(c.scalar("SELECT count(*) FROM chunk_vectors")):
                    problems.append("in-memory vector index size differs from chunk_vectors")
            if problems:
                raise StoreCorruptError(
                    f"knowledge store {self.path} is inconsistent: {', '.join(problems)}",
                    hint="rebuild the store (re-ingest or reinstall the pack)",
                )
        except KnowledgeError:
            raise
        except c.Error as exc:
            raise StoreCorruptError(
                f"knowledge store {self.path} fails its integrity check: {exc}",
                hint="rebuild the store (re-ingest or reinstall the pack)",
            ) from exc


# -- helpers -------------------------------------------------------------------------------
def _read_meta(conn: Connection) -> dict[str, str]:
    if not conn.scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'"
    ):
        return {}
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM store_meta")}


def _has_foreign_tables(conn: Connection) -> bool:
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return bool(names - {"schema_migrations"}) and applied_version(conn) == 0


def _insert_document(conn: Connection, doc: DocumentRecord) -> int:
    conn.execute(
        "INSERT INTO documents (source_path, title, language, content_hash, category, pack_id, "
        "pack_version, meta, added_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            doc.source_path,
            doc.title,
            doc.language,
            doc.content_hash,
            doc.category,
            doc.pack_id,
            int(doc.pack_version),
            json.dumps(doc.meta, ensure_ascii=False, default=str),
            _now(),
        ),
    )
    return int(conn.scalar("SELECT last_insert_rowid()"))


def _index_from_rows(
    rows: list[tuple], dim: int, generation: int, attr_names: tuple[str, ...]
) -> VectorIndex:
    if not rows:
        return VectorIndex.build(
            np.empty(0, np.int64), np.empty((0, dim), np.float32), {}, generation
        )
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = (
        np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim).copy()
    )
    attrs = {name: [r[2 + i] or "" for r in rows] for i, name in enumerate(attr_names)}
    return VectorIndex.build(ids, matrix, attrs, generation)


__all__ = ["KnowledgeStore", "SCHEMA_VERSION", "DEFAULT_FTS_SCHEME"]
