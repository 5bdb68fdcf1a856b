"""Cheap zh/en language detection and token counting for chunks and documents.

Why a heuristic: ingestion needs a language per document and per chunk (for
filters and for picking the reply language), and the kiosk only serves Chinese
and English. Counting CJK ideographs against Latin words is enough to tell them
apart and costs microseconds; no model is loaded.

Token counts are estimates for budgeting chunks, not a tokenizer: each CJK
character counts 1, each Latin word (or number) about 1.3.
"""

from __future__ import annotations

import math
import re

# CJK Unified Ideographs (+ Extension A and compatibility ideographs).
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:['’][A-Za-z]+)?|\d+(?:[.,:]\d+)*")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]{2,}")

WORD_TOKENS = 1.3


def count_cjk(text: str) -> int:
    return len(_CJK.findall(text))


def count_tokens(text: str) -> int:
    """Estimated model tokens: CJK characters count 1 each, other words ~1.3 each."""
    cjk = len(_CJK.findall(text))
    words = len(_WORD.findall(text))
    return cjk + math.ceil(words * WORD_TOKENS)


def detect_language(text: str, default: str = "en") -> str:
    """ "zh" or "en" (or ``default`` when the text has no letters at all).

    A text is Chinese when it has more than two ideographs per Latin word (a
    Chinese word is about two characters): an English sentence that names
    "滨江市民服务中心" stays English, "ATM在哪里" or a Chinese page that mentions
    "Wi-Fi" stays Chinese.
    """
    sample = text[:20000]
    cjk = len(_CJK.findall(sample))
    kana = len(_KANA.findall(sample))
    words = len(_LATIN_WORD.findall(sample))
    if cjk == 0 and words == 0:
        return default
    if kana > cjk / 4 and kana > words:
        return "ja"
    return "zh" if cjk > 2 * words else "en"
