"""The static FAQ: the last rung before the staff handoff, needing no model and no database.

When the knowledge store cannot be opened or searched (corrupt file, failed pack
switch), questions are still matched against a plain FAQ table held in memory
(the bundled one by default; never touched by pack updates). Matching is by the
normalised question key and, failing that, by character similarity
(``difflib``), which is enough for the typical "opening hours?" question.
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass
from pathlib import Path

from .normalize import question_key

MAX_FAQ_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class StaticEntry:
    faq_id: str
    language: str
    question: str
    answer: str
    key: str


class StaticFaq:
    def __init__(self, entries: list[StaticEntry], source: str = "") -> None:
        self.entries = entries
        self.source = source

    @classmethod
    def from_csv(cls, path: Path) -> StaticFaq:
        """Read an ``id,lang,category,question,answer`` CSV (the demo FAQ format)."""
        data = path.read_bytes()[:MAX_FAQ_BYTES].decode("utf-8", errors="replace")
        entries = []
        for row in csv.DictReader(io.StringIO(data)):
            q, a = (row.get("question") or "").strip(), (row.get("answer") or "").strip()
            if q and a:
                entries.append(
                    StaticEntry(row.get("id", ""), row.get("lang", ""), q, a, question_key(q))
                )
        return cls(entries, str(path))

    def match(self, question: str, language: str, *, min_ratio: float = 0.75) -> StaticEntry | None:
        key = question_key(question)
        if not key:
            return None
        best, best_ratio = None, 0.0
        for e in self.entries:
            if e.language != language:
                continue
            if e.key == key:
                return e
            ratio = difflib.SequenceMatcher(None, key, e.key).ratio()
            if ratio > best_ratio:
                best, best_ratio = e, ratio
        return best if best_ratio >= min_ratio else None
