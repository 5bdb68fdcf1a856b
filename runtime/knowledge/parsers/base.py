"""What every parser returns, and the helpers they share.

A parser turns the bytes of one file into either a :class:`ParsedDocument`
(extracted text plus structural blocks with character offsets into that text)
or a :class:`ParsedFaq` (question/answer entries). The chunker works on blocks
only, so every format gets the same chunking and offsets are exact by
construction: ``doc.text[block.start:block.end]`` is the block's text.

Parsers raise :class:`~runtime.errors.IngestError` subclasses; ingestion turns
them into a "skipped" line with the error's message as the reason.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.errors import DocumentLimitError, DocumentParseError
from runtime.knowledge.language import detect_language

BlockKind = Literal["heading", "paragraph", "list_item", "table_row", "code", "quote"]
BLOCK_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ParseLimits:
    """Per-file limits a parser must enforce while it reads (sizes are checked before)."""

    max_pages: int = 2000
    max_rows: int = 100_000
    max_cells: int = 2_000_000
    max_unzipped_bytes: int = 256 * 1024 * 1024
    max_text_chars: int = 20_000_000
    max_zip_ratio: float = 200.0  # inflated / compressed, per archive


@dataclass(frozen=True)
class Block:
    kind: BlockKind
    start: int  # offsets into ParsedDocument.text
    end: int
    section_path: tuple[str, ...]  # headings above this block (a heading includes itself)
    level: int = 0  # heading level, 1 = top
    page: int | None = None  # 1-based page (PDF)


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    text: str
    blocks: tuple[Block, ...]
    language: str
    format: str
    meta: dict[str, Any] = field(default_factory=dict)

    def block_text(self, block: Block) -> str:
        return self.text[block.start : block.end]


@dataclass(frozen=True)
class FaqEntry:
    questions: tuple[str, ...]
    answer: str
    language: str
    category: str = ""
    entry_id: str = ""  # from an id column, else ""
    row: int = 0  # 1-based data row (header is row 0) of the first paraphrase


@dataclass(frozen=True)
class ParsedFaq:
    entries: tuple[FaqEntry, ...]
    format: str
    meta: dict[str, Any] = field(default_factory=dict)


_WS_RUN = re.compile(r"[ \t\u00a0\u3000\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Normalise whitespace inside one block: unify newlines, squeeze spaces, trim lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [_WS_RUN.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


class DocumentBuilder:
    """Appends blocks to one text with a blank line between them and tracks headings.

    Heading levels form the section path: a level-2 heading closes any open
    level-2 or deeper section. The first level-1 heading (or the first heading at
    all) becomes the title unless one was given.
    """

    def __init__(self, *, fmt: str, name: str, limits: ParseLimits, title: str = "") -> None:
        self.fmt = fmt
        self.name = name
        self.limits = limits
        self.title = title.strip()
        self._parts: list[str] = []
        self._length = 0
        self._blocks: list[Block] = []
        self._stack: list[tuple[int, str]] = []
        self.meta: dict[str, Any] = {}

    @property
    def section_path(self) -> tuple[str, ...]:
        return tuple(t for _, t in self._stack)

    def _append(self, text: str) -> tuple[int, int]:
        if self._parts:
            self._parts.append(BLOCK_SEPARATOR)
            self._length += len(BLOCK_SEPARATOR)
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        if self._length > self.limits.max_text_chars:
            raise DocumentLimitError(
                f"{self.name}: extracted text is over {self.limits.max_text_chars} characters",
                hint="split the document, or raise [knowledge] max_text_chars",
            )
        return start, self._length

    def heading(self, text: str, level: int, page: int | None = None) -> None:
        text = " ".join(clean_text(text).split())
        if not text:
            return
        level = max(1, level)
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))
        if not self.title:
            self.title = text
        start, end = self._append(text)
        self._blocks.append(Block("heading", start, end, self.section_path, level, page))

    def block(self, kind: BlockKind, text: str, page: int | None = None) -> None:
        text = clean_text(text) if kind != "code" else text.strip("\n").rstrip()
        if not text.strip():
            return
        start, end = self._append(text)
        self._blocks.append(Block(kind, start, end, self.section_path, 0, page))

    def table_start(self) -> None:
        self._table_header: list[str] = []

    def table_row(self, cells: list[str], *, header: bool = False, page: int | None = None) -> None:
        """One table row as "cell | cell | cell"; a header row is kept as a row of its own.

        Labelling each row with the header ("Fee: 120 yuan; Processing time: 7
        days") was measured and was no better (docs/ingestion.md), so rows keep
        the source's wording; the header is remembered for callers that need it.
        """
        cells = [" ".join(c.split()) for c in cells]
        if header:
            self._table_header = cells
        self.block("table_row", " | ".join(cells), page)

    def build(self, *, fallback_title: str) -> ParsedDocument:
        text = "".join(self._parts)
        if not self._blocks or not text.strip():
            raise DocumentParseError(
                f"{self.name}: no text could be extracted (empty document)",
                hint="check the file opens and has text (a scanned PDF needs OCR first)",
            )
        return ParsedDocument(
            title=self.title or fallback_title,
            text=text,
            blocks=tuple(self._blocks),
            language=detect_language(text),
            format=self.fmt,
            meta=dict(self.meta),
        )


# --- decoding -------------------------------------------------------------------------

_COMMON_CJK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")


def looks_binary(data: bytes) -> bool:
    """NUL bytes or many control characters in the first 8 KiB: not a text file."""
    head = data[:8192]
    if not head:
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls / len(head) > 0.05


def decode_text(data: bytes, name: str) -> str:
    """Decode a text file by one documented rule (docs/ingestion.md):

    1. a UTF-8 / UTF-16 byte-order mark decides;
    2. else strict UTF-8;
    3. else strict GB18030 (Chinese files saved by Windows tools), accepted only if
       the non-ASCII characters it yields are mostly common Chinese characters and
       punctuation (so Latin-1 or random bytes are not read as Chinese);
    4. else the file is skipped: no guessing, no replacement characters.
    """
    if data.startswith(codecs.BOM_UTF8):
        encoding, body = "utf-8", data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, body = "utf-16", data
    else:
        encoding, body = "", data
    if encoding:
        try:
            return body.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DocumentParseError(
                f"{name}: has a {encoding} byte-order mark but invalid {encoding} "
                f"at byte {exc.start}",
                hint="re-save the file as UTF-8",
            ) from None
    if looks_binary(data):
        raise DocumentParseError(
            f"{name}: is binary data, not text",
            hint="give the file its real extension, or remove it",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_error = exc
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = ""
    non_ascii = [c for c in text if ord(c) > 127]
    if non_ascii and sum(1 for c in non_ascii if _COMMON_CJK.match(c)) / len(non_ascii) >= 0.9:
        return text
    raise DocumentParseError(
        f"{name}: is neither UTF-8 nor GB18030 text (invalid byte at offset {utf8_error.start})",
        hint="re-save the file as UTF-8",
    )


# --- zip containers (DOCX, XLSX) --------------------------------------------------------


def check_zip(data: bytes, name: str, limits: ParseLimits, required: str) -> None:
    """Refuse zip bombs before a library inflates anything: sum of declared sizes and ratio.

    The declared sizes can lie, so libraries are also given row/cell caps while
    reading; this check stops the common bombs cheaply.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DocumentParseError(
            f"{name}: is not a valid zip container ({exc})", hint="re-save the file"
        ) from None
    if len(infos) > 10_000:
        raise DocumentLimitError(f"{name}: has {len(infos)} parts; the limit is 10000")
    total = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if total > limits.max_unzipped_bytes:
        raise DocumentLimitError(
            f"{name}: inflates to {total} bytes; the limit is {limits.max_unzipped_bytes}",
            hint="split the file, or raise [knowledge] max_unzipped_bytes",
        )
    if total / packed > limits.max_zip_ratio and total > 10 * 1024 * 1024:
        raise DocumentLimitError(
            f"{name}: compresses {total / packed:.0f}:1, which looks like a zip bomb",
            hint="re-save the file without padding, or split it",
        )
    names = {i.filename for i in infos}
    if required not in names:
        raise DocumentParseError(
            f"{name}: zip container has no {required}", hint="check the file type"
        )
