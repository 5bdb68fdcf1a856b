"""English words that carry the grammar of a question, not its topic.

The search's stopword list (``runtime.knowledge.text``) is short on purpose: BM25's
IDF already discounts frequent words. The relevance gate asks something else of a
word: is it a topic the knowledge never mentions? "My mother is 70. Can she get a
priority ticket so she doesn't have to wait so long?" had "she" and "doesn" flagged
so, and was held to the stricter bar meant for questions about something else.

These are the closed classes of English (pronouns, auxiliaries and the stubs of
their contractions, conjunctions, prepositions, determiners, light adverbs,
question words) plus a few light verbs a question is wrapped in ("I want to").
Content words stay, even common ones ("free", "close", "help", "need"), because
they decide answers. Counting these out of the gate's word coverage as well was
measured and left out (one question fewer on two sets; docs/answers.md).
"""

from __future__ import annotations

import functools

_EN = (
    # pronouns and possessives
    "i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his "
    "himself she her hers herself it its itself they them their theirs themselves one ones "
    "someone somebody something anyone anybody anything everyone everybody everything "
    # auxiliaries, modals and the stubs contractions leave ("doesn't" → doesn, t)
    "am is are was were be been being have has had having do does did doing done can could "
    "may might must shall should will would ought isn aren wasn weren hasn haven hadn doesn "
    "don didn won wouldn shan shouldn couldn mustn needn ll ve re "
    # conjunctions and prepositions
    "and but or nor so yet because although though while if unless until whether than as "
    "about above across after against along among around at before behind below beneath "
    "beside besides between beyond by down during except for from in inside into near of off "
    "on onto out outside over past since through throughout to toward towards under up upon "
    "with within without via "
    # determiners, quantifiers, light adverbs
    "a an the this that these those each every any some such what which whose whatever "
    "also just only very too still already even really quite again here there now then ever "
    "actually maybe perhaps please "
    # question words, and the quantity words "how much / how long / how far" ask with
    "how what when where which who whom why much many long often far soon way kind "
    # light verbs a question is wrapped in
    "want wanted wants like would get gets got getting go goes going went "
    "let know tell"
).split()


@functools.lru_cache(maxsize=1)
def english() -> frozenset[str]:
    """The English function words and their stems (the gate compares stems)."""
    from .extractive import stem

    return frozenset(_EN) | frozenset(stem(w) for w in _EN)


def is_function_word(term: str) -> bool:
    """Whether an English term (a word or its stem) is grammar rather than topic."""
    return term.isascii() and term in english()

