"""Content words of a question that the knowledge never uses.

"What are the opening hours of the city library?" lands close to the hall's
opening hours in embedding space, and shares "opening hours" with them; what
gives it away is "library", a word no document of the pack contains. The
relevance gate asks for stronger evidence when a question has such a word.

Function words are not evidence either way: question and quantity words
("多长时间", "几台", "一份"), single Chinese characters and numbers are left out,
so "身份证换领要多少个工作日" is not suspicious because "领要" is an odd
segmentation.
"""

from __future__ import annotations

import re

from runtime.knowledge.text import query_terms

from .function_words import is_function_word

# Characters that make a Chinese word a question, quantity or modal word, not a topic.
_ZH_FUNCTION = re.compile(r"[几多一两要那这哪什怎么着了吧用拿把个些该]")
_CJK = re.compile(r"[\u3400-\u9fff]")


def content_terms(question: str) -> list[str]:
    """The question's topic words: no numbers, no one-character or function words."""
    from .answer_type import all_asking_words

    asking = all_asking_words()
    out = []
    for t in query_terms(question, "jieba"):
        if t.isdigit() or re.fullmatch(r"[\d:.\-]+", t):
            continue
        if _CJK.search(t):
            if len(t) < 2 or _ZH_FUNCTION.search(t):
                continue
        elif len(t) < 3 or is_function_word(t):  # "how much", "she", "doesn't"
            continue
        if t in asking:  # "长时间" of "要多长时间" asks for a duration; it names no topic
            continue
        out.append(t)
    return out


# jieba part-of-speech tags of topic words: nouns, place and organisation names,
# abbreviations and fixed phrases. Verbs are left out: visitors say "开门" where the
# documents say "开放", and a verb the documents never use is weak evidence that the
# question is about something else.
_ZH_TOPIC_TAGS = frozenset("n nr nrt nrfg ns nt nz ng j l s".split())


def _is_topic(term: str) -> bool:
    if not _CJK.search(term):
        return True
    import jieba.posseg

    tags = [p.flag for p in jieba.posseg.lcut(term)]
    return len(tags) == 1 and tags[0] in _ZH_TOPIC_TAGS


def warm() -> None:
    """Load jieba's part-of-speech tables (about 0.3 s) and the English stemmer now, not on
    the first visitor's question."""
    from .extractive import terms

    _is_topic("图书馆")
    terms("opening hours")


def unknown_content_terms(store, question: str) -> list[str]:
    """Topic words of ``question`` that occur nowhere in ``store`` (empty if it can't tell)."""
    finder = getattr(store, "unknown_terms", None)
    if finder is None:
        return []
    words = content_terms(question)
    unknown = [t for t in finder(words) if _is_topic(t)]
    if not unknown:
        return []
    # jieba's search mode cuts "正门口" into 正门, 门口 and 正门口: when a known word is part of
    # the longer term, the unknown pieces around it are segmentation, not a new topic
    # ("正门前" in the documents, "正门口" in the question).
    known = [w for w in words if w not in unknown and _CJK.search(w)]
    longer = [w for w in words if _CJK.search(w)]
    return [
        t
        for t in unknown
        if not any(t in whole and any(k in whole and k != t for k in known) for whole in longer)
    ]


def situation_terms(store, question: str, unknown: list[str]) -> list[str]:
    """The ``unknown`` words that only describe the visitor's situation: they sit in the
    sentences before the question ("I'm opening a small noodle shop. What's the fee for the
    business licence?"), not in the question itself. None when the question names fewer than
    two topic words of its own ("I need a certificate of no criminal record. Can I get one
    here?"): it leans on its context, so all of it is the topic."""
    from .check import split_context  # here: check imports extractive, which imports us

    context, ask = split_context(question)
    if not context or not unknown:
        return []
    in_ask = set(unknown_content_terms(store, ask))
    if len(set(content_terms(ask)) - in_ask) < 2:
        return []
    return [t for t in unknown if t not in in_ask]


# The thing a question asks about, where English puts it: "what is the penalty…", "who is
# the director…", "is there an ATM…", "do you have a pharmacy…". Chinese is left out:
# its head noun comes last and jieba's tags do not find it reliably.
_EN_FOCUS = re.compile(
    r"^\s*(?:(?:what|who|which)\s+(?:is|are|was|were)|is\s+there|are\s+there"
    r"|do\s+you\s+have|how\s+much\s+(?:is|are|does|do))\s+"
    r"(?:(?:the|a|an|any|your|some)\s+)?([a-z][a-z-]+)",
    re.I,
)


def unknown_focus(store, question: str) -> str | None:
    """The word a question asks about, when the knowledge never uses it ("Who is the director
    of the service hall?": "director"): such a question is about something else, however
    many of its other words the knowledge shares."""
    m = _EN_FOCUS.search(question)
    if m is None:
        return None
    word = m.group(1).lower()
    if word not in content_terms(word):
        return None  # a function word ("What is it…")
    return next(iter(unknown_content_terms(store, word)), None)
