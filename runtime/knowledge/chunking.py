"""Chunking that keeps meaning whole: structure first, then sentences, then semantic merging.

1. Structure: a parser's blocks (heading, paragraph, list item, table row, code)
   are the starting units. A chunk never crosses a section (heading) or a page.
2. Sentences: a block over the token budget is split on sentence ends, Chinese
   (。！？；) and English (. ! ? ; before a space), and a sentence still over
   budget is cut at a word/character boundary.
3. Semantic merge: neighbouring units join while the next unit's embedding is
   similar enough to the chunk so far (cosine with the mean of its units) and
   the sum stays within ``max_tokens``; a chunk under ``min_tokens`` always takes
   its neighbour when it fits. With ``semantic=False`` units join on budget alone.

Token counts are the cheap estimate of :func:`runtime.knowledge.language.count_tokens`.
Every chunk is a contiguous span of the parsed text:
``doc.text[c.char_start:c.char_end] == c.text``.
A chunk's ``section_path`` holds the headings below the document title (the
title is the document's own field, so a citation reads "Title > Section").
Defaults were chosen by measurement (docs/ingestion.md, scripts/bench/chunking.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.knowledge.language import WORD_TOKENS, count_tokens, detect_language
from runtime.knowledge.parsers.base import ParsedDocument
from runtime.knowledge.records import ChunkRecord

EmbedFn = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class ChunkingSettings:
    max_tokens: int = 200
    min_tokens: int = 40
    similarity_threshold: float = 0.7
    semantic: bool = True
    overlap_tokens: int = 0
    context_headings: bool = True  # embed "Title > Section" with each chunk (text itself unchanged)

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError("max_tokens must be at least 8")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError("min_tokens must be between 0 and max_tokens")
        if not 0 <= self.overlap_tokens < self.max_tokens:
            raise ValueError("overlap_tokens must be between 0 and max_tokens - 1")

    @classmethod
    def from_config(cls, knowledge) -> ChunkingSettings:  # knowledge: KnowledgeSection
        return cls(
            max_tokens=knowledge.chunk_max_tokens,
            min_tokens=min(knowledge.chunk_min_tokens, knowledge.chunk_max_tokens),
            similarity_threshold=knowledge.chunk_similarity,
            semantic=knowledge.chunk_semantic,
            overlap_tokens=min(knowledge.chunk_overlap_tokens, knowledge.chunk_max_tokens - 1),
        )


@dataclass(frozen=True)
class Unit:
    start: int
    end: int
    tokens: int
    section_path: tuple[str, ...]
    page: int | None
    heading: bool = False


# --- sentence splitting -------------------------------------------------------------------

_SENTENCE_END = re.compile(
    r"[。！？；!?]+[”’\"」』）)]*"  # Chinese (and bare !?) ends need no space after them
    r"|(?<![A-Z])(?<!\b[Nn]o)(?<!\be\.g)(?<!\bi\.e)(?<!\bMr)(?<!\bDr)(?<!\bMs)[.;]+[”’\"')]*(?=\s)"
    r"|\n+"
)
_PIECE = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\s\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
)


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of ``text[start:end]``, whitespace trimmed."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    pos = start
    for match in _SENTENCE_END.finditer(text, start, end):
        span = _trimmed(text, pos, match.end())
        if span:
            spans.append(span)
        pos = match.end()
    span = _trimmed(text, pos, end)
    if span:
        spans.append(span)
    return spans


def _hard_split(text: str, start: int, end: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut an over-long sentence at word (English) or character (CJK) boundaries."""
    spans: list[tuple[int, int]] = []
    piece_start, budget = start, 0.0
    for match in _PIECE.finditer(text, start, end):
        cost = 1.0 if len(match.group()) == 1 and ord(match.group()) >= 0x3400 else WORD_TOKENS
        if budget + cost > max_tokens and match.start() > piece_start:
            span = _trimmed(text, piece_start, match.start())
            if span:
                spans.append(span)
            piece_start, budget = match.start(), 0.0
        budget += cost
    span = _trimmed(text, piece_start, end)
    if span:
        spans.append(span)
    return spans


def _block_runs(
    doc: ParsedDocument, settings: ChunkingSettings
) -> list[tuple[int, int, str, object]]:
    """Blocks as (start, end, kind, block), with whole lists and tables fused when they fit.

    A table's rows, a list's items, and the paragraph introducing them ("...are:")
    mean little apart, so a run of them that fits the budget becomes one unit.
    """
    runs: list[tuple[int, int, str, object]] = []
    for block in doc.blocks:
        if runs:
            start, _, kind, first = runs[-1]
            same_place = (first.section_path, first.page) == (block.section_path, block.page)
            joinable = (
                block.kind in ("table_row", "list_item")
                and (
                    kind == block.kind
                    or (
                        kind == "paragraph"
                        and doc.text[: runs[-1][1]].rstrip().endswith((":", "："))
                    )
                )
            ) or (kind == "run:" + block.kind)
            if (
                same_place
                and joinable
                and count_tokens(doc.text[start : block.end]) <= settings.max_tokens
            ):
                runs[-1] = (start, block.end, "run:" + block.kind, first)
                continue
        runs.append((block.start, block.end, block.kind, block))
    return runs


def document_units(doc: ParsedDocument, settings: ChunkingSettings) -> list[Unit]:
    """Structural units (blocks, whole small lists/tables); oversized ones split into sentences."""
    units: list[Unit] = []
    text = doc.text
    for start, end, kind, block in _block_runs(doc, settings):
        tokens = count_tokens(text[start:end])
        if kind == "heading" or tokens <= settings.max_tokens:
            units.append(
                Unit(start, end, tokens, block.section_path, block.page, kind == "heading")
            )
            continue
        for s_start, s_end in split_sentences(text, start, end):
            s_tokens = count_tokens(text[s_start:s_end])
            pieces = (
                [(s_start, s_end)]
                if s_tokens <= settings.max_tokens
                else _hard_split(text, s_start, s_end, settings.max_tokens)
            )
            for p_start, p_end in pieces:
                units.append(
                    Unit(
                        p_start,
                        p_end,
                        count_tokens(text[p_start:p_end]),
                        block.section_path,
                        block.page,
                    )
                )
    return units


# --- merging --------------------------------------------------------------------------------


def _scopes(units: list[Unit]) -> list[list[int]]:
    """Indices of units grouped by (section, page), in order; a heading opens its own scope."""
    scopes: list[list[int]] = []
    key = None
    for i, unit in enumerate(units):
        k = (unit.section_path, unit.page)
        if k != key or unit.heading:
            scopes.append([])
            key = k
        scopes[-1].append(i)
    return scopes


def _unit_vectors(
    doc: ParsedDocument, units: list[Unit], embed: EmbedFn | None, batch: int
) -> np.ndarray | None:
    if embed is None or not units:
        return None
    texts = [doc.text[u.start : u.end] for u in units]
    parts = [
        np.asarray(embed(texts[i : i + batch]), dtype=np.float32)
        for i in range(0, len(texts), batch)
    ]
    return np.concatenate(parts, axis=0)


def _merge_scope(
    scope: list[int], units: list[Unit], vectors: np.ndarray | None, settings: ChunkingSettings
) -> list[list[int]]:
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in scope:
        unit = units[i]
        if not current:
            current, tokens = [i], unit.tokens
            continue
        fits = tokens + unit.tokens <= settings.max_tokens
        join = fits
        only_headings = all(units[j].heading for j in current)
        if (
            fits
            and settings.semantic
            and vectors is not None
            and tokens >= settings.min_tokens
            and not only_headings
        ):
            body = [j for j in current if not units[j].heading] or current
            centroid = vectors[body].mean(axis=0)
            norm = float(np.linalg.norm(centroid))
            similarity = float(centroid @ vectors[i]) / norm if norm > 0 else 0.0
            join = similarity >= settings.similarity_threshold
        if join:
            current.append(i)
            tokens += unit.tokens
        else:
            groups.append(current)
            current, tokens = [i], unit.tokens
    if current:
        groups.append(current)
    # A short tail joins the chunk before it when the budget allows.
    if len(groups) >= 2:
        tail_tokens = sum(units[j].tokens for j in groups[-1])
        prev_tokens = sum(units[j].tokens for j in groups[-2])
        if tail_tokens < settings.min_tokens and prev_tokens + tail_tokens <= settings.max_tokens:
            groups[-2].extend(groups.pop())
    return groups


def _with_overlap(groups: list[list[int]], units: list[Unit], overlap: int) -> list[list[int]]:
    if overlap <= 0:
        return groups
    out = [groups[0]] if groups else []
    for prev, group in zip(groups, groups[1:], strict=False):
        carried: list[int] = []
        budget = 0
        for j in reversed(prev):
            if units[j].heading or budget + units[j].tokens > overlap:
                break
            carried.insert(0, j)
            budget += units[j].tokens
        out.append(carried + group)
    return out


def chunk_document(
    doc: ParsedDocument,
    settings: ChunkingSettings | None = None,
    embed: EmbedFn | None = None,
    *,
    batch_size: int = 32,
) -> list[ChunkRecord]:
    """Split a parsed document into chunks; ``embed`` (texts → vectors) enables semantic merging."""
    settings = settings or ChunkingSettings()
    units = document_units(doc, settings)
    vectors = _unit_vectors(doc, units, embed, batch_size) if settings.semantic else None
    scopes = _scopes(units)
    has_body = any(not u.heading for u in units)
    chunks: list[ChunkRecord] = []
    for scope in scopes:
        if has_body and all(units[i].heading for i in scope):
            continue  # a heading with no text of its own lives on in its subsections' paths
        groups = _with_overlap(
            _merge_scope(scope, units, vectors, settings), units, settings.overlap_tokens
        )
        for group in groups:
            first, last = units[group[0]], units[group[-1]]
            text = doc.text[first.start : last.end]
            path = last.section_path
            if path and path[0] == doc.title:
                path = path[1:]  # the title is the document's; citations show "Title > Section"
            chunks.append(
                ChunkRecord(
                    text=text,
                    section_path=path,
                    char_start=first.start,
                    char_end=last.end,
                    ordinal=len(chunks),
                    language=detect_language(text, default=doc.language),
                    page=first.page,
                )
            )
    return chunks


def embedding_text(doc_title: str, chunk: ChunkRecord, settings: ChunkingSettings) -> str:
    """What a chunk is embedded as: its text, led by its title and section path when useful."""
    if not settings.context_headings:
        return chunk.text
    path = list(chunk.section_path)
    if doc_title and (not path or path[0] != doc_title):
        path.insert(0, doc_title)
    if path and chunk.text.startswith(path[-1]):
        path.pop()  # the chunk already starts with its own heading
    return f"{' > '.join(path)}\n{chunk.text}" if path else chunk.text
