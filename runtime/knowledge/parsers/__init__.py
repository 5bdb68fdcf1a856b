"""Document parsers: one module per format, chosen by file extension and checked by content.

``parse_bytes(data, name, limits)`` is the one entry point ingestion uses. The
extension picks the parser; the first bytes must agree with it (a PDF or a zip
archive renamed to ``.md`` is refused, as is binary data in a text format), so
a mislabelled file is skipped with a clear reason instead of being read as
garbage. New formats register the same way the built-ins do, through
:func:`register_parser`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from runtime.errors import UnsupportedFormatError
from runtime.knowledge.parsers.base import (
    Block,
    FaqEntry,
    ParsedDocument,
    ParsedFaq,
    ParseLimits,
)

__all__ = [
    "Block",
    "FaqEntry",
    "ParsedDocument",
    "ParsedFaq",
    "ParseLimits",
    "ParserSpec",
    "register_parser",
    "parser_for",
    "parse_bytes",
    "supported_extensions",
]

ParseFn = Callable[..., "ParsedDocument | ParsedFaq"]


@dataclass(frozen=True)
class ParserSpec:
    fmt: str
    extensions: tuple[str, ...]
    target: str  # "module:function", imported on first use (keeps heavy libraries lazy)
    magic: bytes | None = None  # required leading bytes (binary formats); None: a text format

    def load(self) -> ParseFn:
        import importlib

        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, ParserSpec] = {}
_MAGICS = {
    b"%PDF-": "PDF document",
    b"PK\x03\x04": "zip archive (DOCX/XLSX/...)",
    b"\x7fELF": "program",
    b"\x89PNG": "PNG image",
    b"\xff\xd8\xff": "JPEG image",
    b"GIF8": "GIF image",
    b"\xd0\xcf\x11\xe0": "legacy Office file (.doc/.xls)",
    b"SQLite format 3": "SQLite database",
}


def register_parser(spec: ParserSpec) -> None:
    """Register a parser for its extensions (later registrations win)."""
    for ext in spec.extensions:
        _REGISTRY[ext.lower()] = spec


for _spec in (
    ParserSpec(
        "markdown", (".md", ".markdown"), "runtime.knowledge.parsers.markdown:parse_markdown"
    ),
    ParserSpec("text", (".txt", ".text"), "runtime.knowledge.parsers.text:parse_text"),
    ParserSpec("html", (".html", ".htm", ".xhtml"), "runtime.knowledge.parsers.html:parse_html"),
    ParserSpec("pdf", (".pdf",), "runtime.knowledge.parsers.pdf:parse_pdf", magic=b"%PDF-"),
    ParserSpec(
        "docx", (".docx",), "runtime.knowledge.parsers.docx:parse_docx", magic=b"PK\x03\x04"
    ),
    ParserSpec("csv", (".csv", ".tsv"), "runtime.knowledge.parsers.faq_table:parse_csv"),
    ParserSpec(
        "xlsx",
        (".xlsx", ".xlsm"),
        "runtime.knowledge.parsers.faq_table:parse_xlsx",
        magic=b"PK\x03\x04",
    ),
):
    register_parser(_spec)


def supported_extensions() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def parser_for(name: str, head: bytes) -> ParserSpec:
    """The parser for a file name whose content starts with ``head``, or UnsupportedFormatError."""
    ext = PurePath(name).suffix.lower()
    spec = _REGISTRY.get(ext)
    if spec is None:
        raise UnsupportedFormatError(
            f"{name}: {ext or 'no extension'} is not a supported format",
            hint="supported: " + " ".join(supported_extensions()),
        )
    if spec.magic is not None:
        # PDFs may have a little junk before the header; readers accept it within 1 KiB.
        ok = spec.magic in head[:1024] if spec.fmt == "pdf" else head.startswith(spec.magic)
        if not ok:
            raise UnsupportedFormatError(
                f"{name}: content is not {spec.fmt.upper()} (wrong header bytes)",
                hint="check the file is not truncated or mislabelled",
            )
        return spec
    for magic, what in _MAGICS.items():
        if head.startswith(magic):
            raise UnsupportedFormatError(
                f"{name}: is a {what}, not {spec.fmt} text",
                hint="give the file its real extension, or remove it",
            )
    return spec


def parse_bytes(
    data: bytes, name: str, limits: ParseLimits | None = None
) -> ParsedDocument | ParsedFaq:
    """Parse one file's bytes; raises an IngestError subclass with a reason on any failure."""
    spec = parser_for(name, data[:1024])
    return spec.load()(data, name=name, limits=limits or ParseLimits())
