"""FAQ answers: a curated answer when the visitor's question matches an FAQ paraphrase confidently.

The store ranks FAQ entries (exact normalised match first, then the cosine of
the best paraphrase). A match is *confident* when it is exact, or when its
cosine is at least ``threshold`` and clearly ahead of the next entry
(``margin``): two near-equal entries mean the question is ambiguous and
retrieval should decide. The default threshold was chosen by measurement
(docs/answers.md, `kiosk eval answers --faq-thresholds`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.knowledge.records import FaqHit

from .days import day_set, parts
from .groups import unmatched_group

DEFAULT_THRESHOLD = 0.80
DEFAULT_MARGIN = 0.02


# Words that change the answer while barely moving an embedding: a paraphrase that differs
# from the visitor's question in one of these is a different question ("open on Monday
# afternoon?" vs the FAQ's "open on Monday morning?"), so the FAQ answer is not confident.
# Days and parts of the day are read by days.py, as the quote and the yes/no verdict read them.
_SLOTS: dict[str, tuple[tuple[str, str], ...]] = {
    # "When does ticketing start?" and "What is the latest ticket?" share every other word.
    # (Opening and closing are left out: an entry's hours give both.)
    "bound": (
        ("start", r"开始|最早|起始|\bstart(s|ing)?\b|\bearliest\b|\bfirst\b"),
        ("end", r"最晚|截止|停止|结束|\blatest\b|\blast\b|\bstop(s|ping)?\b"),
    ),
    "negation": (
        ("neg", r"\bwithout\b|\bnot\b|n't\b|\bno\b|不|没|无需|免"),
    ),
}
_SLOT_RE = {k: tuple((v, re.compile(p, re.I)) for v, p in vals) for k, vals in _SLOTS.items()}
_NUMBER = re.compile(r"\d+")


def _slots(text: str) -> dict[str, frozenset[str]]:
    found = {k: frozenset(v for v, rx in vals if rx.search(text)) for k, vals in _SLOT_RE.items()}
    found["day"] = frozenset(day_set(text))
    found["part_of_day"] = frozenset(parts(text))
    found["number"] = frozenset(_NUMBER.findall(text))
    return found


def slot_conflict(question: str, paraphrase: str) -> str | None:
    """The slot (day, part of day, start/end, negation, number) in which the two questions
    differ, if any.

    For days, parts of day, start/end and numbers a conflict needs a value on both sides that
    differs (the question may leave a slot open); negation must simply agree.
    """
    q, p = _slots(question), _slots(paraphrase)
    for name in ("day", "part_of_day", "bound", "number"):
        if q[name] and p[name] and q[name] != p[name]:
            return name
    if q["negation"] != p["negation"]:
        return "negation"
    return None


@dataclass(frozen=True)
class FaqDecision:
    hit: FaqHit | None  # the confident hit, or None
    best: FaqHit | None  # the best candidate whatever its score (for traces and evaluation)


def decide(
    hits: list[FaqHit],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = DEFAULT_MARGIN,
    question: str | None = None,
    paraphrases: Callable[[str], Sequence[str]] | None = None,
) -> FaqDecision:
    """Pick the confident FAQ hit among ranked ``hits`` (best first), if any.

    With ``question``, a near match is confident only if one of its entry's phrasings
    (``paraphrases(faq_id)``, else the matched one) agrees with the question in every
    day, part of the day, number and negation (see :func:`slot_conflict`), and the entry
    speaks of any group of visitors the question names (see :func:`unmatched_group`).
    """
    if not hits:
        return FaqDecision(None, None)
    best = hits[0]
    if best.method == "exact":
        return FaqDecision(best, best)
    if best.method != "vector":  # keyword-only scores are not cosines: never confident alone
        return FaqDecision(None, best)
    if question is not None:
        phrasings = paraphrases(best.faq_id) if paraphrases else ()
        if all(slot_conflict(question, p) for p in (phrasings or (best.matched_question,))):
            return FaqDecision(None, best)
        if unmatched_group(question, (*phrasings, best.matched_question, best.answer)):
            return FaqDecision(None, best)
    runner_up = hits[1].score if len(hits) > 1 else -1.0
    if best.score >= threshold and best.score - runner_up >= margin:
        return FaqDecision(best, best)
    return FaqDecision(None, best)


def match(
    store,
    question: str,
    vector: np.ndarray | None,
    language: str,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = DEFAULT_MARGIN,
) -> FaqDecision:
    """Ask the store for FAQ candidates in the visitor's language and decide."""
    langs = (language,) if language in ("zh", "en") else ()
    hits = store.match_faq(question, vector, k=3, languages=langs)
    return decide(hits, threshold=threshold, margin=margin, question=question,
                  paraphrases=getattr(store, "faq_paraphrases", None))
