"""Groups of visitors whose rules differ: seniors, low-income residents, disabled visitors,
children, pregnant women.

Fees are waived for some, queues and parking differ for others, a parent comes along for
children. A question naming one ("I am 68", "持残疾人停车证") is answered by text that
speaks of that group, not by the general rule: the FAQ match and the quote both check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

GROUPS = {
    "disabled": re.compile(r"残疾|轮椅|disab|wheelchair|blind|deaf|guide dog|导盲", re.I),
    "senior": re.compile(
        r"老年|老人|长者|senior|elderly|pension|退休|\b(6[5-9]|[7-9]\d)\b|(6[5-9]|[7-9]\d)岁", re.I
    ),
    "low_income": re.compile(r"低保|低收入|low[- ]income", re.I),
    "child": re.compile(
        r"孩子|儿童|小孩|未满|未成年|婴儿|\bchild|\bkids?\b|\bson\b|\bdaughter\b|under (16|18)"
        r"|\bbaby",
        re.I,
    ),
    "pregnant": re.compile(r"孕妇|怀孕|pregnan", re.I),
}


def groups(text: str) -> set[str]:
    """The groups of visitors ``text`` names."""
    return {name for name, rx in GROUPS.items() if rx.search(text)}


def unmatched_group(question: str, texts: Sequence[str]) -> str | None:
    """A group of visitors the question names but none of ``texts`` mentions, if any."""
    missing = groups(question) - groups(" ".join(texts))
    return min(missing) if missing else None
