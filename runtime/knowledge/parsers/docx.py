"""DOCX → blocks with python-docx: headings by style, list paragraphs, tables row by row.

The body is walked in document order (paragraphs and tables interleaved), so
a table stays under the heading it appears under. Heading levels come from the
paragraph style ("Heading 1".."Heading 9", "Title", and the Chinese "标题 1"
names Word uses in Chinese installs). The zip container is size-checked before
python-docx inflates anything.
"""

from __future__ import annotations

import io
import re

from runtime.errors import DocumentLimitError, DocumentParseError
from runtime.knowledge.parsers.base import DocumentBuilder, ParsedDocument, ParseLimits, check_zip

_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.I)


def _style_name(paragraph) -> str:
    try:
        return (paragraph.style.name or "") if paragraph.style is not None else ""
    except (KeyError, ValueError, AttributeError):
        return ""


def parse_docx(data: bytes, *, name: str, limits: ParseLimits) -> ParsedDocument:
    check_zip(data, name, limits, required="word/document.xml")
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - python-docx raises many types on corrupt input
        raise DocumentParseError(
            f"{name}: is a corrupt DOCX ({type(exc).__name__}: {exc})",
            hint="open and re-save it in a word processor",
        ) from None
    title = ""
    try:
        title = (document.core_properties.title or "").strip()
    except Exception:  # noqa: BLE001 - metadata is optional
        pass
    builder = DocumentBuilder(fmt="docx", name=name, limits=limits, title=title)
    cells = 0
    title_style_seen = False
    body = document.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            para = Paragraph(child, document)
            style = _style_name(para)
            text = para.text
            match = _HEADING_STYLE.match(style.strip())
            if style.lower() == "title":
                builder.heading(text, 1)
                title_style_seen = True
            elif match:  # below a Title paragraph, "Heading 1" is level 2
                builder.heading(text, int(match.group(1)) + (1 if title_style_seen else 0))
            elif "list" in style.lower() or child.find(".//{*}numPr") is not None:
                builder.block("list_item", text)
            else:
                builder.block("paragraph", text)
        elif tag == "tbl":
            table = Table(child, document)
            builder.table_start()
            for row_index, row in enumerate(table.rows):
                row_cells = [" ".join(c.text.split()) for c in row.cells]
                cells += len(row_cells)
                if cells > limits.max_cells:
                    raise DocumentLimitError(
                        f"{name}: tables have over {limits.max_cells} cells",
                        hint="split the document, or raise [knowledge] max_table_cells",
                    )
                unique: list[str] = []
                for c in row_cells:  # merged cells repeat their text
                    if not unique or unique[-1] != c:
                        unique.append(c)
                builder.table_row(unique, header=row_index == 0 and len(table.rows) > 1)
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return builder.build(fallback_title=stem)
