"""HTML → blocks with lxml: scripts, styles, forms and navigation chrome removed.

Why lxml: it parses broken real-world HTML the way browsers do and is already
installed with python-docx. Only visible text is kept; ``<script>``,
``<style>``, ``<template>``, ``<iframe>``, ``<nav>`` and friends are dropped
before any text is read, and no external resource is ever fetched.
"""

from __future__ import annotations

import re

from runtime.errors import DocumentParseError
from runtime.knowledge.parsers.base import DocumentBuilder, ParsedDocument, ParseLimits, decode_text

_DROP = (
    "script",
    "style",
    "noscript",
    "template",
    "iframe",
    "object",
    "embed",
    "svg",
    "canvas",
    "form",
    "button",
    "select",
    "textarea",
    "nav",
    "head",
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_LEAF_BLOCKS = {
    "p": "paragraph",
    "li": "list_item",
    "pre": "code",
    "dt": "paragraph",
    "dd": "paragraph",
    "figcaption": "paragraph",
    "caption": "paragraph",
    "address": "paragraph",
}
_CONTAINERS = {
    "div",
    "section",
    "article",
    "main",
    "body",
    "blockquote",
    "header",
    "footer",
    "aside",
    "ul",
    "ol",
    "dl",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "figure",
    "details",
    "summary",
    "center",
}


def _text(el) -> str:
    return el.text_content()


def _walk(el, builder: DocumentBuilder) -> None:
    tag = el.tag if isinstance(el.tag, str) else ""
    tag = tag.lower()
    if tag in _HEADINGS:
        builder.heading(_text(el), _HEADINGS[tag])
        return
    if tag == "table":
        builder.table_start()
    if tag == "tr":
        cells = [c for c in el if isinstance(c.tag, str) and c.tag.lower() in ("td", "th")]
        header = bool(cells) and all(c.tag.lower() == "th" for c in cells)
        builder.table_row([_text(c) for c in cells], header=header)
        return
    if tag in _LEAF_BLOCKS and not any(
        isinstance(c.tag, str)
        and c.tag.lower() in (_HEADINGS.keys() | _LEAF_BLOCKS.keys() | _CONTAINERS)
        for c in el.iterdescendants()
    ):
        kind = _LEAF_BLOCKS[tag]
        builder.block(kind, _text(el) if kind != "code" else el.text_content())
        return
    # A container (or unknown element): loose text between child blocks is a paragraph.
    loose: list[str] = [el.text or ""] if tag in _CONTAINERS or tag in _LEAF_BLOCKS else []
    for child in el:
        child_tag = child.tag.lower() if isinstance(child.tag, str) else ""
        is_block = (
            child_tag in _HEADINGS
            or child_tag in _LEAF_BLOCKS
            or child_tag in _CONTAINERS
            or child_tag == "tr"
        )
        if is_block:
            if "".join(loose).strip():
                builder.block("quote" if tag == "blockquote" else "paragraph", "".join(loose))
            loose = []
            _walk(child, builder)
        else:
            loose.append(child.text_content() if child_tag else "")
        loose.append(child.tail or "")
    if "".join(loose).strip():
        builder.block("quote" if tag == "blockquote" else "paragraph", "".join(loose))


def parse_html(data: bytes, *, name: str, limits: ParseLimits) -> ParsedDocument:
    import lxml.html
    from lxml import etree

    # lxml refuses control characters in text nodes (found by fuzzing): blank them first.
    source = _CONTROL.sub(" ", decode_text(data, name))
    if source.lstrip().startswith("<?xml"):
        source = source.split("?>", 1)[-1]  # lxml refuses str input with an encoding declaration
    try:
        root = lxml.html.document_fromstring(source)
        title_el = root.find(".//title")
        title = " ".join(title_el.text_content().split()) if title_el is not None else ""
        for el in list(root.iter(*_DROP)):
            el.drop_tree()
        for comment in list(root.iter(etree.Comment, etree.ProcessingInstruction)):
            comment.drop_tree()
        builder = DocumentBuilder(fmt="html", name=name, limits=limits, title=title)
        body = root.find("body")
        _walk(body if body is not None else root, builder)
    except (etree.ParserError, etree.LxmlError, ValueError) as exc:
        raise DocumentParseError(
            f"{name}: is not parseable HTML ({exc})", hint="check the file"
        ) from None
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return builder.build(fallback_title=stem)
