"""Markdown (CommonMark + tables) → blocks, with markdown-it-py.

Why a real parser: headings, list items, tables and code fences must be told
apart reliably to chunk on structure (a "#" inside a code fence is not a
heading). markdown-it-py is already installed with ``rich``. Inline markup
(emphasis, links, images) is reduced to its visible text.
"""

from __future__ import annotations

import re

from runtime.knowledge.parsers.base import DocumentBuilder, ParsedDocument, ParseLimits, decode_text

_TAG = re.compile(r"<[^>]*>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)


def _strip_html(raw: str) -> str:
    return _TAG.sub(" ", _SCRIPT.sub(" ", raw))


def _inline_text(token) -> str:  # markdown_it.token.Token
    out: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif child.type == "image":
            out.append(_inline_text(child) or child.attrGet("alt") or "")
        elif child.type == "html_inline":
            continue
    return "".join(out)


def parse_markdown(data: bytes, *, name: str, limits: ParseLimits) -> ParsedDocument:
    from markdown_it import MarkdownIt

    source = decode_text(data, name)
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    tokens = md.parse(source)
    builder = DocumentBuilder(fmt="markdown", name=name, limits=limits)
    list_depth = quote_depth = 0
    item_prefix: list[str] = []
    row: list[str] | None = None
    in_head = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        kind = tok.type
        if kind == "heading_open":
            builder.heading(_inline_text(tokens[i + 1]), int(tok.tag[1:]))
            i += 3
            continue
        if kind in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
        elif kind in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
        elif kind == "list_item_open":
            item_prefix.append(f"{tok.info}{tok.markup} " if tok.info else "")
        elif kind == "list_item_close":
            item_prefix.pop()
        elif kind == "blockquote_open":
            quote_depth += 1
        elif kind == "blockquote_close":
            quote_depth -= 1
        elif kind == "table_open":
            builder.table_start()
        elif kind == "thead_open":
            in_head = True
        elif kind == "thead_close":
            in_head = False
        elif kind == "tr_open":
            row = []
        elif kind in ("th_open", "td_open") and row is not None:
            row.append(" ".join(_inline_text(tokens[i + 1]).split()))
        elif kind == "tr_close" and row is not None:
            builder.table_row(row, header=in_head)
            row = None
        elif kind == "paragraph_open":
            text = _inline_text(tokens[i + 1])
            if list_depth:
                prefix = item_prefix[-1] if item_prefix else ""
                if prefix:  # only the item's first paragraph carries the number
                    item_prefix[-1] = ""
                builder.block("list_item", prefix + text)
            else:
                builder.block("quote" if quote_depth else "paragraph", text)
            i += 3
            continue
        elif kind in ("fence", "code_block"):
            builder.block("code", tok.content)
        elif kind == "html_block":
            builder.block("paragraph", _strip_html(tok.content))
        i += 1
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return builder.build(fallback_title=stem)
