"""FAQ answers: a curated answer when the visitor's question matches an FAQ paraphrase confidently.

The store ranks FAQ entries (exact normalised match first, then the cosine of
the best paraphrase). A match is *confident* when it is exact, or when its
cosine is at least ``threshold`` and clearly ahead of the next entry
(``margin``): two near-equal entries mean the question is ambiguous and
retrieval should decide. The default threshold was chosen by measurement
(docs/answers.md, `kiosk eval answers --faq-thresholds`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.knowledge.records import FaqHit

DEFAULT_THRESHOLD = 0.80
DEFAULT_MARGIN = 0.02


@dataclass(frozen=True)
class FaqDecision:
    hit: FaqHit | None  # the confident hit, or None
    best: FaqHit | None  # the best candidate whatever its score (for traces and evaluation)


def decide(
    hits: list[FaqHit], *, threshold: float = DEFAULT_THRESHOLD, margin: float = DEFAULT_MARGIN
) -> FaqDecision:
    """Pick the confident FAQ hit among ranked ``hits`` (best first), if any."""
    if not hits:
        return FaqDecision(None, None)
    best = hits[0]
    if best.method == "exact":
        return FaqDecision(best, best)
    if best.method != "vector":  # keyword-only scores are not cosines: never confident alone
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
    return decide(hits, threshold=threshold, margin=margin)
