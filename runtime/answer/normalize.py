"""Question clean-up (untrusted input) and the matching key used by the cache.

Visitors type on touch keyboards and speech recognisers return full-width
punctuation, Traditional characters and trailing "?" / "？": none of that should
make two identical questions look different. The character-level
normalisation (NFKC, case, Traditional→Simplified, spaces) is the knowledge
store's :func:`runtime.knowledge.text.normalize`, so the cache, the FAQ and the
index agree; this module adds input limits and punctuation folding.
"""

from __future__ import annotations

import re
import unicodedata

from runtime.knowledge.text import normalize as normalize_text

MAX_QUESTION_CHARS = 500  # longer questions are cut (a kiosk question is a sentence or two)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


def clean_question(text: str, max_chars: int = MAX_QUESTION_CHARS) -> tuple[str, list[str]]:
    """Strip control/format characters, collapse spaces, cut to ``max_chars``.

    Returns the cleaned text and notes describing what was changed (recorded on the answer).
    """
    notes: list[str] = []
    if not isinstance(text, str):
        text = str(text)
    if len(text) > max_chars * 4:  # don't run regexes over megabytes
        text = text[: max_chars * 4]
        notes.append("question cut before cleaning")
    cleaned = _CONTROL.sub(" ", text)
    if cleaned != text:
        notes.append("control characters removed")
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > max_chars:
        cleaned = cleaned[:max_chars]
        notes.append(f"question cut to {max_chars} characters")
    return cleaned, notes


def question_key(text: str) -> str:
    """Key for exact matching: normalised, punctuation and spaces removed."""
    return _PUNCT.sub("", normalize_text(unicodedata.normalize("NFKC", text)))
