"""PDF → blocks with pypdf: text per page, paragraphs on blank lines, headings from the outline.

Every block keeps its 1-based page so citations can say "p. 3". Section paths
come from the PDF's outline (bookmarks) when it has one: an outline title found
as a line on its target page becomes a heading there, otherwise at the top of
that page. Encrypted PDFs open only with an empty password. A PDF that makes
pypdf loop is stopped by the per-file time limit of the parse worker.
"""

from __future__ import annotations

import io
import logging

from runtime.errors import DocumentLimitError, DocumentParseError
from runtime.knowledge.parsers.base import DocumentBuilder, ParsedDocument, ParseLimits

log = logging.getLogger(__name__)


def _outline(reader) -> list[tuple[int, int, str]]:
    """(page_index, depth, title) for every outline entry pypdf can resolve."""
    out: list[tuple[int, int, str]] = []

    def walk(items, depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # noqa: BLE001 - broken outline entries are ignored, the text is kept
                continue
            title = " ".join(str(getattr(item, "title", "") or "").split())
            if title and page is not None and page >= 0:
                out.append((page, depth, title))

    try:
        walk(reader.outline, 1)
    except Exception as exc:  # noqa: BLE001
        log.debug("outline unreadable: %s", exc)
    return out


def parse_pdf(data: bytes, *, name: str, limits: ParseLimits) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PyPdfError

    if b"%PDF-" not in data[:1024]:
        raise DocumentParseError(
            f"{name}: does not start with %PDF-; not a PDF", hint="check the file type"
        )
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentParseError(
                f"{name}: is password-protected", hint="save an unprotected copy"
            )
        n_pages = len(reader.pages)
    except DocumentParseError:
        raise
    except (
        PdfReadError,
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        OSError,
        RecursionError,
    ) as exc:
        raise DocumentParseError(
            f"{name}: is a corrupt PDF ({type(exc).__name__}: {exc})", hint="re-export the PDF"
        ) from None
    if n_pages > limits.max_pages:
        raise DocumentLimitError(
            f"{name}: has {n_pages} pages; the limit is {limits.max_pages}",
            hint="split the PDF, or raise [knowledge] max_pdf_pages",
        )
    meta_title = ""
    try:
        meta_title = " ".join(str((reader.metadata or {}).get("/Title") or "").split())
    except Exception:  # noqa: BLE001 - metadata is optional
        pass
    outline = _outline(reader)
    builder = DocumentBuilder(fmt="pdf", name=name, limits=limits, title=meta_title)
    failed_pages = 0
    for index in range(n_pages):
        try:
            text = reader.pages[index].extract_text() or ""
        except Exception as exc:  # noqa: BLE001 - one bad page must not lose the others
            failed_pages += 1
            log.warning("%s: page %d unreadable: %s", name, index + 1, exc)
            continue
        page = index + 1
        pending = [(depth, title) for p, depth, title in outline if p == index]
        lines = text.replace("\r", "\n").split("\n")
        found = {
            title for _, title in pending if any(" ".join(ln.split()) == title for ln in lines)
        }
        for depth, title in pending:
            if title not in found:
                builder.heading(title, depth, page)
        paragraph: list[str] = []
        for line in lines + [""]:
            norm = " ".join(line.split())
            heading = next(((d, t) for d, t in pending if t in found and t == norm), None)
            if heading or not norm:
                if paragraph:
                    builder.block("paragraph", "\n".join(paragraph), page)
                    paragraph = []
                if heading:
                    builder.heading(heading[1], heading[0], page)
                    pending.remove(heading)
                continue
            paragraph.append(line)
    if failed_pages == n_pages and n_pages:
        raise DocumentParseError(
            f"{name}: no page of the PDF could be read", hint="re-export the PDF"
        )
    builder.meta["pages"] = n_pages
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return builder.build(fallback_title=stem)
