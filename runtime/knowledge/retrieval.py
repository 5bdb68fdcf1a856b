"""Hybrid retrieval: FTS5 keyword search, vector kNN, reciprocal rank fusion, optional rerank.

The store (``store.py``) owns the connection and the in-memory vector index;
this module holds the pure retrieval steps so each can be tested and benchmarked
alone:

- :func:`keyword_search`: user text → quoted FTS5 terms (never raw syntax) →
  BM25-ranked chunk ids, filters applied in SQL.
- :func:`sqlite_vec_search`: sqlite-vec's own exact float kNN (the reference
  path; the default exact path is ``vector_index.VectorIndex``).
- :func:`rrf_fuse`: reciprocal rank fusion, ``sum 1 / (rrf_k + rank)``: rank
  based, so BM25's unbounded scores and cosine similarities need no calibration.
- :class:`EmbedderReranker`: an optional second stage scoring each candidate by
  its best-matching sentence instead of the whole-chunk average, which helps when
  a long chunk answers the question in one sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .records import Hit, SearchFilters
from .text import fts_query, query_terms

if TYPE_CHECKING:
    from runtime.inference.base import Embedder

    from .connection import Connection

MODES = ("hybrid", "keyword", "vector")
MAX_QUERY_CHARS = (
    2000  # a question longer than this is cut: FTS5 cost grows with the number of terms
)
MAX_QUERY_TERMS = 64


def filter_sql(
    filters: SearchFilters | None, chunk: str = "c", doc: str = "d"
) -> tuple[str, list[str]]:
    """SQL conditions (joined with AND, leading " AND ") + params for the filters."""
    if filters is None:
        return "", []
    parts: list[str] = []
    params: list[str] = []
    for column, values in (
        (f"{chunk}.language", filters.languages),
        (f"{doc}.category", filters.categories),
        (f"{doc}.pack_id", filters.pack_ids),
    ):
        if values:
            parts.append(f"{column} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
    return ("".join(f" AND {p}" for p in parts), params)


def keyword_query(query: str, scheme: str) -> str:
    """The safe FTS5 MATCH string for a visitor's question ("" when it has no searchable term)."""
    terms = query_terms(query[:MAX_QUERY_CHARS], scheme)[:MAX_QUERY_TERMS]
    return fts_query(terms)


def term_frequencies(
    conn: Connection, terms: Sequence[str], cap: int, table: str = "chunks_fts"
) -> dict[str, int]:
    """Rows each term matches, counted up to ``cap + 1`` (unranked: cheap even for common terms)."""
    out: dict[str, int] = {}
    for term in terms:
        out[term] = int(
            conn.scalar(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {table} MATCH ? LIMIT ?)",
                (fts_query([term]), cap + 1),
            )
        )
    return out


def budgeted_match(
    conn: Connection, terms: Sequence[str], budget: int, table: str = "chunks_fts"
) -> tuple[str, str]:
    """The MATCH expression to rank, keeping BM25's cost near ``budget`` rows; and the strategy.

    FTS5 computes BM25 for every row an OR query matches: over 100k chunks a
    term found in half of them costs ~200 ms to rank, while its information
    (IDF) is small. So terms are added rarest first while the rows they match
    stay within ``budget``; when even the rarest term is over budget, all terms
    must match (AND: few rows); when that finds nothing (or there is one term),
    the plain OR is the only option left ("or-full": slow but complete; callers
    that have a vector ranking as well may skip it, see :func:`keyword_search`).
    """
    df = term_frequencies(conn, terms, budget, table)
    kept: list[str] = []
    total = 0
    for term in sorted(terms, key=lambda t: df[t]):
        if df[term] == 0:
            continue
        if kept and total + df[term] > budget:
            break
        if not kept and df[term] > budget:
            break
        kept.append(term)
        total += df[term]
    if kept:
        return fts_query(kept), (
            "or" if len(kept) == len([t for t in terms if df[t]]) else "or-pruned"
        )
    present = [t for t in terms if df[t]]
    if not present:
        return "", "none"
    if len(present) > 1:
        conj = " AND ".join(quote for quote in (fts_query([t]) for t in present))
        if conn.scalar(f"SELECT 1 FROM {table} WHERE {table} MATCH ? LIMIT 1", (conj,)):
            return conj, "and"
    return fts_query(present), "or-full"


def keyword_search(
    conn: Connection,
    query: str,
    scheme: str,
    *,
    limit: int,
    filters: SearchFilters | None = None,
    budget: int | None = None,
    table_rows: int | None = None,
    complete: bool = True,
) -> list[tuple[int, float]]:
    """(chunk id, bm25) best first; BM25 here is FTS5's: negative, lower is better.

    With ``budget`` set and a table bigger than it (``table_rows``), common
    terms are pruned as :func:`budgeted_match` describes; ``complete=False``
    (hybrid search with a vector) returns nothing rather than rank every row of
    only-common terms.
    """
    terms = query_terms(query[:MAX_QUERY_CHARS], scheme)[:MAX_QUERY_TERMS]
    if not terms:
        return []
    if budget is not None and (table_rows is None or table_rows > budget):
        match, strategy = budgeted_match(conn, terms, budget)
        if strategy == "or-full" and not complete:
            # Only over-budget terms and no row has them all: their IDF is low, ranking them costs
            # ~2 µs a row (200 ms at 100k), and the vector ranking alongside carries the question.
            return []
    else:
        match = fts_query(terms)
    if not match:
        return []
    where, params = filter_sql(filters)
    if where:
        sql = (
            "SELECT f.rowid, f.rank FROM chunks_fts f JOIN chunks c ON c.id = f.rowid "
            "JOIN documents d ON d.id = c.doc_id "
            f"WHERE chunks_fts MATCH ?{where} ORDER BY f.rank LIMIT ?"
        )
    else:
        sql = "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?"
    return [(int(r[0]), float(r[1])) for r in conn.execute(sql, [match, *params, int(limit)])]


def sqlite_vec_search(
    conn: Connection, vector: np.ndarray, *, limit: int, filters: SearchFilters | None = None
) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) best first: sqlite-vec's exact kNN over ``chunk_vectors``."""
    conds: list[str] = []
    params: list[object] = [np.asarray(vector, dtype=np.float32).tobytes(), int(limit)]
    if filters is not None:
        for column, values in (
            ("language", filters.languages),
            ("category", filters.categories),
            ("pack_id", filters.pack_ids),
        ):
            if values:
                conds.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
    sql = "SELECT rowid, distance FROM chunk_vectors WHERE embedding MATCH ? AND k = ?"
    sql += "".join(f" AND {c}" for c in conds) + " ORDER BY distance"
    return [(int(r[0]), 1.0 - float(r[1])) for r in conn.execute(sql, params)]


def rrf_fuse(rankings: Sequence[Sequence[int]], rrf_k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of id lists (each best first) → (id, score) best first.

    Ties keep the order of first appearance.
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
    order = {item: i for i, item in enumerate(dict.fromkeys(x for r in rankings for x in r))}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


Rerank = Callable[[str, np.ndarray | None, list[Hit]], list[Hit]]

_SENTENCE = re.compile(r"(?<=[.!?。！？；;])\s*|\n+")


class EmbedderReranker:
    """Rerank candidates by the cosine of the query to each chunk's best sentence.

    Blends that with the first-stage order (``weight`` of the sentence score),
    so a chunk the fusion put first only drops when a sentence elsewhere matches
    clearly better. Costs one embedder batch over the candidates' sentences.
    """

    def __init__(self, embedder: Embedder, *, weight: float = 0.5, max_sentences: int = 64) -> None:
        self.embedder = embedder
        self.weight = weight
        self.max_sentences = max_sentences

    def __call__(self, query: str, query_vector: np.ndarray | None, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        qv = query_vector if query_vector is not None else self.embedder.embed(query)
        qv = np.asarray(qv, dtype=np.float32)
        qv = qv / (np.linalg.norm(qv) or 1.0)
        sentences: list[str] = []
        owner: list[int] = []
        for i, hit in enumerate(hits):
            parts = [s.strip() for s in _SENTENCE.split(hit.text) if s and s.strip()] or [hit.text]
            for s in parts:
                if len(sentences) < self.max_sentences:
                    sentences.append(s)
                    owner.append(i)
        sims = self.embedder.embed_batch(sentences) @ qv
        best = np.full(len(hits), -1.0, dtype=np.float32)
        for i, s in zip(owner, sims, strict=True):
            best[i] = max(best[i], float(s))
        n = len(hits)
        blended = []
        for i, hit in enumerate(hits):
            first_stage = 1.0 - i / n  # rank-based, in (0, 1]
            score = self.weight * float(best[i]) + (1.0 - self.weight) * first_stage
            blended.append(
                replace(
                    hit,
                    score=score,
                    scores={**hit.scores, "rerank_sentence_cosine": float(best[i])},
                )
            )
        return sorted(blended, key=lambda h: -h.score)
