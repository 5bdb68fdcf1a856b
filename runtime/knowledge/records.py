"""Plain records passed between ingestion, the store, packs and the answer pipeline.

These are the store's public vocabulary: parsers and chunkers produce
``DocumentRecord``/``ChunkRecord``/``FaqRecord``; retrieval returns ``Hit``
objects whose ``Citation`` says exactly where a passage came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Language = str  # "zh", "en", ... (ISO 639-1)


@dataclass(frozen=True)
class DocumentRecord:
    source_path: str  # as given to ingest (or the path inside a pack)
    title: str
    language: Language
    content_hash: str  # sha256 of the source bytes; re-ingesting the same bytes is a no-op
    category: str = ""
    pack_id: str = ""  # "" for documents ingested locally
    pack_version: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkRecord:
    text: str
    section_path: tuple[str, ...]  # headings from the document title down to this chunk
    char_start: int  # offsets into the document's extracted text
    char_end: int
    ordinal: int  # position of the chunk in its document
    language: Language
    page: int | None = None  # 1-based, for PDF


@dataclass(frozen=True)
class FaqRecord:
    faq_id: str
    questions: tuple[str, ...]  # one or more paraphrases of the same question
    answer: str
    language: Language
    category: str = ""
    source: str = ""  # file (and row) it came from
    pack_id: str = ""
    pack_version: int = 0


@dataclass(frozen=True)
class Citation:
    document_title: str
    source_path: str
    section: str  # section path joined with " > "
    page: int | None
    char_start: int
    char_end: int
    pack_id: str
    pack_version: int

    def label(self) -> str:
        where = f"{self.document_title} > {self.section}" if self.section else self.document_title
        if self.page:
            where += f", p. {self.page}"
        if self.pack_id:
            where += f" [{self.pack_id} v{self.pack_version}]"
        return where


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    text: str
    citation: Citation
    score: float  # the fused score the ranking used (higher is better)
    scores: dict[str, float] = field(default_factory=dict)  # e.g. keyword_rank, vector_distance


@dataclass(frozen=True)
class FaqHit:
    faq_id: str
    matched_question: str
    answer: str
    language: Language
    score: float  # cosine similarity of the best-matching paraphrase, or 1.0 for exact
    method: Literal["exact", "vector", "keyword"]
    source: str = ""
    pack_id: str = ""
    pack_version: int = 0


@dataclass(frozen=True)
class SearchFilters:
    languages: tuple[Language, ...] = ()
    categories: tuple[str, ...] = ()
    pack_ids: tuple[str, ...] = ()
