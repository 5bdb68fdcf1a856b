"""Ingest files into a KnowledgeStore: walk, limit, hash, parse (isolated), chunk, embed, store.

Each file is handled on its own and ends as one :class:`FileResult`:

- ``added``: parsed, chunked, embedded and written in one store transaction
  (a changed file replaces its older version with the same source path);
- ``unchanged``: the store already holds these exact bytes (sha256), nothing done;
- ``skipped``: with a reason (unsupported format, over a limit, corrupt, empty,
  undecodable, no FAQ columns, parse timeout...). A skipped file changes nothing.

Directories are walked in name order; only regular files are read, symbolic
links are never followed, and hidden files and folders (".name") are ignored.
Untrusted bytes are parsed in a worker process with a time and memory cap
(:mod:`runtime.knowledge.parsers.worker`).

FAQ tables (CSV/XLSX) become FAQ entries; the file itself is recorded as a
document with no chunks, so an unchanged table is recognised by its hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from runtime.errors import DocumentLimitError, IngestError, UnsupportedFormatError
from runtime.knowledge.chunking import ChunkingSettings, chunk_document, embedding_text
from runtime.knowledge.parsers import ParsedDocument, ParsedFaq, ParseLimits, supported_extensions
from runtime.knowledge.parsers.worker import InlineParser, ParseWorker, WorkerLimits
from runtime.knowledge.records import DocumentRecord, FaqRecord

if TYPE_CHECKING:
    from runtime.inference.base import Embedder
    from runtime.knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)

Status = Literal["added", "unchanged", "skipped"]


@dataclass(frozen=True)
class IngestLimits:
    """Limits on untrusted input files (from ``[knowledge]`` in the config)."""

    max_file_bytes: int = 50 * 1024 * 1024
    parse: ParseLimits = field(default_factory=ParseLimits)
    timeout_s: float = 60.0
    memory_bytes: int = 2048 * 1024 * 1024
    isolate: bool = (
        True  # parse in a worker process (time/memory caps); False only for trusted input
    )

    @classmethod
    def from_config(cls, knowledge) -> IngestLimits:  # knowledge: KnowledgeSection
        return cls(
            max_file_bytes=knowledge.max_file_bytes,
            parse=ParseLimits(
                max_pages=knowledge.max_pdf_pages,
                max_rows=knowledge.max_table_rows,
                max_cells=knowledge.max_table_cells,
                max_unzipped_bytes=knowledge.max_unzipped_bytes,
                max_text_chars=knowledge.max_text_chars,
            ),
            timeout_s=knowledge.parse_timeout_s,
            memory_bytes=knowledge.parse_memory_mb * 1024 * 1024,
        )


@dataclass(frozen=True)
class FileResult:
    path: str
    status: Status
    reason: str = ""
    documents: int = 0
    chunks: int = 0
    faq_entries: int = 0
    format: str = ""
    language: str = ""


@dataclass
class IngestReport:
    results: list[FileResult] = field(default_factory=list)

    @property
    def added(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "added"]

    @property
    def skipped(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "skipped"]

    @property
    def ok(self) -> bool:
        """True when no file was skipped."""
        return not self.skipped

    @property
    def all_failed(self) -> bool:
        """True when nothing was added or found unchanged (including: no files at all)."""
        return not any(r.status in ("added", "unchanged") for r in self.results)

    def totals(self) -> dict[str, int]:
        return {
            "files": len(self.results),
            "added": len(self.added),
            "unchanged": sum(r.status == "unchanged" for r in self.results),
            "skipped": len(self.skipped),
            "documents": sum(r.documents for r in self.results),
            "chunks": sum(r.chunks for r in self.results),
            "faq_entries": sum(r.faq_entries for r in self.results),
        }

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "all_failed": self.all_failed,
            "totals": self.totals(),
            "files": [asdict(r) for r in self.results],
        }


# --- walking ------------------------------------------------------------------------------


def iter_input_files(paths: Sequence[Path]) -> Iterator[tuple[Path, str]]:
    """(path, "") for each regular file to ingest, or (path, reason) for one that cannot be.

    Given paths are used as given (symbolic links among them are refused too);
    folders are walked without following links, hidden entries are ignored.
    """
    for given in paths:
        path = Path(given)
        try:
            st = path.lstat()
        except OSError as exc:
            yield path, f"cannot read: {exc.strerror or exc}"
            continue
        if stat.S_ISLNK(st.st_mode):
            yield path, "symbolic link (links are not followed)"
        elif stat.S_ISREG(st.st_mode):
            yield path, ""
        elif stat.S_ISDIR(st.st_mode):
            yield from _walk(path)
        else:
            yield path, "not a regular file"


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    def on_error(exc: OSError) -> None:
        log.warning("cannot list %s: %s", exc.filename, exc.strerror)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError as exc:
                yield path, f"cannot read: {exc.strerror or exc}"
                continue
            if stat.S_ISLNK(st.st_mode):
                yield path, "symbolic link (links are not followed)"
            elif not stat.S_ISREG(st.st_mode):
                yield path, "not a regular file"
            else:
                yield path, ""


def read_capped(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing (before and while reading) anything over ``max_bytes``."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise IngestError(
            f"{path}: cannot open ({exc.strerror or exc})", hint="check the file's permissions"
        ) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsupportedFormatError(f"{path}: is not a regular file")
        if st.st_size > max_bytes:
            raise DocumentLimitError(
                f"{path}: is {st.st_size} bytes; the limit is {max_bytes}",
                hint="split the file, or raise [knowledge] max_file_bytes",
            )
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DocumentLimitError(f"{path}: grew past {max_bytes} bytes while being read")
    return data


# --- ingesting -------------------------------------------------------------------------------


def _embed(embedder: Embedder, texts: Sequence[str], batch_size: int) -> np.ndarray:
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    parts = [
        np.asarray(embedder.embed_batch(list(texts[i : i + batch_size])), dtype=np.float32)
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts, axis=0)


def _faq_records(
    parsed: ParsedFaq, source: str, category: str, pack_id: str, pack_version: int
) -> list[FaqRecord]:
    records = []
    for n, entry in enumerate(parsed.entries, start=1):
        records.append(
            FaqRecord(
                # Scoped by file name (not the path, which differs between machines and packs):
                # two tables may both number their rows 1, 2, 3...
                faq_id=f"{Path(source).name}#{entry.entry_id or n}",
                questions=entry.questions,
                answer=entry.answer,
                language=entry.language,
                category=entry.category or category,
                source=f"{source}#row{entry.row}",
                pack_id=pack_id,
                pack_version=pack_version,
            )
        )
    return records


def ingest_paths(
    store: KnowledgeStore,
    paths: Sequence[Path],
    embedder: Embedder,
    *,
    chunking: ChunkingSettings | None = None,
    progress: Callable[[int, int, FileResult], None] | None = None,
    pack_id: str = "",
    pack_version: int = 0,
    category: str = "",
    limits: IngestLimits | None = None,
    batch_size: int = 32,
) -> IngestReport:
    """Ingest files and folders into ``store``; one result per file, never raises for one bad file.

    ``progress(done, total, result)`` is called after each file.
    """
    if embedder.dim != store.dim or embedder.model_id != store.embedding_model:
        from runtime.errors import KnowledgeError

        raise KnowledgeError(
            f"embedder {embedder.model_id!r} ({embedder.dim}-d) does not match store {store.path} "
            f"({store.embedding_model!r}, {store.dim}-d)",
            hint="ingest with the embedder the store was built with, or use a new store file",
        )
    chunking = chunking or ChunkingSettings()
    limits = limits or IngestLimits()
    files = list(iter_input_files(paths))
    report = IngestReport()
    parser = (
        ParseWorker(WorkerLimits(limits.timeout_s, limits.memory_bytes))
        if limits.isolate
        else InlineParser()
    )
    with parser:
        for done, (path, reason) in enumerate(files, start=1):
            if reason:
                result = FileResult(str(path), "skipped", reason)
            else:
                try:
                    result = _ingest_one(
                        store,
                        path,
                        embedder,
                        parser,
                        chunking,
                        limits,
                        category,
                        pack_id,
                        pack_version,
                        batch_size,
                    )
                except IngestError as exc:
                    result = FileResult(str(path), "skipped", exc.message)
            if result.status == "skipped":
                log.warning("skipped %s: %s", result.path, result.reason)
            report.results.append(result)
            if progress is not None:
                progress(done, len(files), result)
    if not files:
        report.results.append(
            FileResult(", ".join(map(str, paths)) or "(none)", "skipped", "no files found")
        )
    return report


def _ingest_one(
    store: KnowledgeStore,
    path: Path,
    embedder: Embedder,
    parser: ParseWorker | InlineParser,
    chunking: ChunkingSettings,
    limits: IngestLimits,
    category: str,
    pack_id: str,
    pack_version: int,
    batch_size: int,
) -> FileResult:
    source = str(path)
    if path.suffix.lower() not in supported_extensions():
        raise UnsupportedFormatError(f"{path.suffix or 'no extension'} is not a supported format")
    data = read_capped(path, limits.max_file_bytes)
    digest = hashlib.sha256(data).hexdigest()
    if store.has_document(digest):
        return FileResult(source, "unchanged", "same content already in the store")
    parsed = parser.parse(data, source, limits.parse)
    meta = {"format": parsed.format, "bytes": len(data)}
    if isinstance(parsed, ParsedFaq):
        records = _faq_records(parsed, source, category, pack_id, pack_version)
        vectors = _embed(embedder, [q for r in records for q in r.questions], batch_size)
        split, offset = [], 0
        for r in records:
            split.append(vectors[offset : offset + len(r.questions)])
            offset += len(r.questions)
        store.add_faq(records, split)
        languages = sorted({r.language for r in records})
        doc = DocumentRecord(
            source_path=source,
            title=path.stem,
            language=languages[0] if len(languages) == 1 else "mul",
            content_hash=digest,
            category=category,
            pack_id=pack_id,
            pack_version=pack_version,
            meta={**meta, "kind": "faq", "faq_entries": len(records), **parsed.meta},
        )
        store.add_document(doc, [], np.zeros((0, store.dim), dtype=np.float32))
        return FileResult(source, "added", "", 1, 0, len(records), parsed.format, doc.language)
    assert isinstance(parsed, ParsedDocument)
    chunks = chunk_document(
        parsed, chunking, embedder.embed_batch if chunking.semantic else None, batch_size=batch_size
    )
    if not chunks:
        raise IngestError(f"{source}: produced no chunks", hint="check the document has text")
    vectors = _embed(
        embedder, [embedding_text(parsed.title, c, chunking) for c in chunks], batch_size
    )
    doc = DocumentRecord(
        source_path=source,
        title=parsed.title,
        language=parsed.language,
        content_hash=digest,
        category=category,
        pack_id=pack_id,
        pack_version=pack_version,
        meta={**meta, "kind": "document", **parsed.meta},
    )
    store.add_document(doc, chunks, vectors)
    return FileResult(source, "added", "", 1, len(chunks), 0, parsed.format, parsed.language)
