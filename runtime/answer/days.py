"""Days of the week, holidays and parts of the day named in a question or a sentence.

"Is the hall open on Thursday evening?" is answered by the sentence about
Thursdays, not the one about Mondays, and "Tuesday to Friday" covers a
Wednesday. The yes/no verdict and the quote's sentence choice both read days
this way.
"""

from __future__ import annotations

import re

from runtime.knowledge.text import normalize

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_WORDS = {
    "mon": r"mondays?|周一|星期一|礼拜一",
    "tue": r"tuesdays?|周二|星期二|礼拜二",
    "wed": r"wednesdays?|周三|星期三|礼拜三",
    "thu": r"thursdays?|周四|星期四|礼拜四",
    "fri": r"fridays?|周五|星期五|礼拜五",
    "sat": r"saturdays?|周六|星期六|礼拜六",
    "sun": r"sundays?|周日|周天|星期日|星期天|礼拜天",
    "holiday": r"(?:public )?holidays?|节假日|假期|春节|国庆",
}
DAY_RX = {k: re.compile(v, re.I) for k, v in DAY_WORDS.items()}
_ANY_DAY = "|".join(f"(?:{v})" for v in DAY_WORDS.values())
_RANGE = re.compile(rf"({_ANY_DAY})\s*(?:to|through|until|-|–|—|至|到|~)\s*({_ANY_DAY})", re.I)
PARTS = {
    "morning": re.compile(r"\bmornings?\b|上午|早上", re.I),
    "afternoon": re.compile(r"\bafternoons?\b|下午", re.I),
    "evening": re.compile(r"\bevenings?\b|\bnights?\b|晚上|夜间", re.I),
}


def day_set(text: str) -> set[str]:
    """The days ``text`` names ("mon".."sun", "holiday"), ranges expanded."""
    norm = normalize(text)
    days = {k for k, rx in DAY_RX.items() if rx.search(norm)}
    for m in _RANGE.finditer(norm):
        a = next((k for k in DAYS if DAY_RX[k].fullmatch(m.group(1))), None)
        b = next((k for k in DAYS if DAY_RX[k].fullmatch(m.group(2))), None)
        if a and b:
            i, j = DAYS.index(a), DAYS.index(b)
            if i <= j:
                days.update(DAYS[i : j + 1])
    return days


def parts(text: str) -> set[str]:
    """The parts of the day ``text`` names (morning, afternoon, evening)."""
    return {k for k, rx in PARTS.items() if rx.search(text)}
