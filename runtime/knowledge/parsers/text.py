"""Plain text → blocks: paragraphs split on blank lines, bullet lines as list items.

Plain text has no markup, so structure is guessed cheaply and conservatively:
a short first line without end punctuation is the title, lines numbered in the
Chinese style ("一、", "第二章") or short lines ending in ":"/"：" that stand
alone are headings; everything else is a paragraph.
"""

from __future__ import annotations

import re

from runtime.knowledge.parsers.base import DocumentBuilder, ParsedDocument, ParseLimits, decode_text

_BULLET = re.compile(r"^\s*(?:[-*•·‣◦]|\d{1,3}[.)、]|[（(]\d{1,3}[)）])\s+\S|^\s*\d{1,3}、\S")
_ZH_HEADING = re.compile(
    r"^(?:第[一二三四五六七八九十百\d]+[章节部分条]|[一二三四五六七八九十]+、)\s*\S"
)
_END_PUNCT = tuple(".!?。！？；;,，、")


def _is_heading_line(line: str) -> bool:
    line = line.strip()
    if not line or len(line) > 60:
        return False
    if _ZH_HEADING.match(line):
        return True
    return line.endswith((":", "：")) and len(line) <= 40


def parse_text(data: bytes, *, name: str, limits: ParseLimits) -> ParsedDocument:
    source = decode_text(data, name).replace("\r\n", "\n").replace("\r", "\n")
    builder = DocumentBuilder(fmt="text", name=name, limits=limits)
    paragraphs = [p for p in re.split(r"\n\s*\n", source) if p.strip()]
    for index, para in enumerate(paragraphs):
        lines = [ln for ln in para.split("\n") if ln.strip()]
        first = lines[0].strip()
        if index == 0 and len(lines) == 1 and len(first) <= 100 and not first.endswith(_END_PUNCT):
            builder.heading(first, 1)
            continue
        if len(lines) == 1 and _is_heading_line(first):
            builder.heading(first.rstrip(":："), 2)
            continue
        if all(_BULLET.match(ln) for ln in lines):
            for ln in lines:
                builder.block("list_item", re.sub(r"^\s*[-*•·‣◦]\s+", "", ln))
            continue
        builder.block("paragraph", para)
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return builder.build(fallback_title=stem)
