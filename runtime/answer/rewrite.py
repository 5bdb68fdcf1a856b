"""Query rewriting: resolve a follow-up through the conversation so far; optional HyDE / multi-hop.

"And on Sundays?" after "What are the opening hours on Saturday?" cannot be
retrieved on its own. A follow-up is recognised by cheap cues (short, starts
with "and"/"what about"/"那", ends with "呢", pronouns like "it"/"这个") and
rewritten by joining it to the previous user question, which keeps the topic
words for retrieval and gives the generator the full context. This costs
microseconds, unlike asking the generator to rewrite (which would spend the
turn's deadline on prefill).

HyDE (a generated hypothetical answer used as an extra retrieval query) and
multi-hop decomposition (a question with two asks split into two searches) are
switched by the experiment config; HyDE needs a generator and a time budget.
"""

from __future__ import annotations

import re

from .types import Turn

_EN_CUES = re.compile(
    r"^(and|but|also|what about|how about|what if|then|so|or)\b"
    r"|\b(it|its|that|this|there|they|them|those)\b",
    re.IGNORECASE,
)
# Words that look like pointers back but are not: the "there" of "is there a cash machine?"
# and the "it" of "is it possible to ...?" start questions of their own.
_EN_NOT_CUES = re.compile(
    r"\b(is|are|was|were|isn't|aren't)\s+there\b"
    r"|\bis\s+it\s+(possible|ok|okay|allowed|necessary|true|free to)\b",
    re.IGNORECASE,
)
_ZH_CUES = re.compile(r"^(那|那么|还有|另外|再|而且)|呢[？?]?$|^(这个|那个|它)|(这个|那个|它)")
_MAX_SHORT_WORDS = 6
_MAX_SHORT_CHARS = 8


def is_followup(question: str, language: str) -> bool:
    q = question.strip()
    if language == "zh":
        core = re.sub(r"[\s\W]+", "", q)
        return bool(_ZH_CUES.search(q)) or len(core) <= _MAX_SHORT_CHARS
    words = re.findall(r"\w+", q)
    return (
        bool(_EN_CUES.search(_EN_NOT_CUES.sub(" ", q)))
        or len(words) <= 3
        or (len(words) <= _MAX_SHORT_WORDS and q.lower().startswith("and"))
    )


_EN_DAYS = r"(mon|tues|wednes|thurs|fri|satur|sun)days?"
_EN_DAY = re.compile(rf"\b{_EN_DAYS}\b", re.IGNORECASE)
_ZH_DAY = re.compile(r"(周|星期|礼拜)([一二三四五六日天])")


def normalize_weekdays(text: str) -> str:
    """星期天 / 礼拜日 / 星期六 → 周日 / 周日 / 周六: the documents write 周X."""
    return _ZH_DAY.sub(lambda m: "周" + ("日" if m.group(2) == "天" else m.group(2)), text)


def _swap_day(previous: str, followup: str, language: str) -> str | None:
    """"What are the hours on Saturday?" + "And on Sundays?" → "What are the hours on Sundays?"."""
    pattern = _ZH_DAY if language == "zh" else _EN_DAY
    new = pattern.search(followup)
    if new is None or pattern.search(previous) is None:
        return None
    return pattern.sub(new.group(0), previous, count=1)


def carried_topic(previous: str, question: str) -> list[str]:
    """The topic words of ``previous`` that a follow-up leaves out: its content words, less
    those only asking for a kind of answer ("where", "多少钱") and those the follow-up says.

    "Where can I borrow a wheelchair?" then "Does it cost anything to borrow one?" carries
    "wheelchair" and not "where": the follow-up asks about a fee, not a place.
    """
    from .answer_type import all_asking_words
    from .extractive import stem, terms
    from .vocabulary import content_terms

    own = terms(question)
    asking = all_asking_words()
    out = []
    for word in content_terms(previous):
        s = stem(word)
        if s in own or s in asking or word in asking or word in question:
            continue
        out.append(word)
    # jieba's search mode gives "身份" beside "身份证": keep the longer word only.
    return [w for w in out if not any(w != o and w in o for o in out)]


def rewrite_with_history(
    question: str, history: list[Turn], language: str, *, joined: bool = False
) -> str:
    """The question to search and answer: the follow-up resolved against the last user question.

    A follow-up that names another weekday replaces the weekday of the last question. Any
    other follow-up keeps its own words, which say what it asks, and gets the topic words
    of the last question in brackets: "周六上午能来办吗？（身份证 到期）", not the last
    question whole, whose "在哪里" would make a question about a place of it. With no
    topic word to carry, or with ``joined``, the follow-up is joined to the last question:
    that is the text to embed, since a bracketed word or two is too little for a sentence
    encoder.
    """
    question = normalize_weekdays(question) if language == "zh" else question
    previous = [t.content for t in history if t.role == "user" and t.content.strip()]
    if not previous or not is_followup(question, language):
        return question
    last = previous[-1].strip()
    if language == "zh":
        last = normalize_weekdays(last)
    swapped = _swap_day(last, question, language)
    if swapped is not None:
        return swapped
    topic = [] if joined else carried_topic(last, question)
    if topic:
        if language == "zh":
            return f"{question.strip()}（{' '.join(topic)}）"
        return f"{question.strip()} ({' '.join(topic)})"
    sep = "" if language == "zh" else " "
    return f"{last}{sep}{question.strip()}"


_SPLIT_EN = re.compile(r"\?\s+|\s+and also\s+|;\s*")
_SPLIT_ZH = re.compile(r"[？?；;]\s*|另外|还有")


def decompose(question: str, language: str, max_parts: int = 3) -> list[str]:
    """Multi-hop: split a question with several asks into sub-questions (at most ``max_parts``)."""
    splitter = _SPLIT_ZH if language == "zh" else _SPLIT_EN
    parts = [p.strip() for p in splitter.split(question) if len(p.strip()) >= 4]
    return parts[:max_parts] if len(parts) > 1 else [question]
