"""A yes or no in front of a quoted passage, only when the passage itself decides it.

A visitor who asks "Is there an English interpreter on Wednesdays?" and gets
"English interpreter | Help Desk | Tuesday to Friday 09:00–16:00" has to work
the answer out; a "Yes." in front of that quote saves them the work. But a
wrong "Yes." in front of a quote is the worst answer a kiosk can give, so this
module says yes or no only when a simple, checkable reading of the quote
decides it, and abstains otherwise (the quote is then shown alone):

- the question must be a yes/no question;
- the deciding sentence must contain most of the question's content words;
- when the question names a day (or part of the day), only sentences about
  that day decide, with ranges ("Tuesday to Friday", "周一至周五") expanded; a
  sentence about other days decides nothing;
- a negation counts only when a word of the question (or its day) follows it
  closely ("no English interpreter on Mondays", not "no booking needed");
- restrictive words ("only", "只", "仅") and mixed signals make it abstain,
  because "cash only at windows 101–108" answers "cash at the passport
  windows?" only with knowledge of which window is where;
- a negation in the question itself ("without an appointment", "不预约")
  flips the reading only when the passage does not share it.

Measured on the demo set in docs/answers.md (`kiosk eval answers`): the
verdicts it gives, and how often it abstains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.knowledge.text import normalize

from .check import answer_polarity, is_yes_no_question
from .days import DAY_RX as _DAY_RX
from .days import DAY_WORDS as _DAY_WORDS
from .days import PARTS as _PARTS
from .days import day_set as _day_set
from .days import parts as _parts
from .extractive import contains, split_sentences, terms

_NEG = {
    "en": re.compile(
        r"\b(not|no|never|cannot|can't|won't|isn't|aren't|doesn't|don't|closed|unavailable)\b|n't\b",
        re.I,
    ),
    "zh": re.compile(r"不(?!同|仅|但|论|管)|没有|没|无法|无须|未|禁止|关闭|休息|暂停"),
}
_RESTRICT = {
    "en": re.compile(r"\b(only|except|unless|but)\b", re.I),
    "zh": re.compile(r"只|仅|除外|除了|但"),
}
# A negation in the question: "without an appointment", "不预约" (not "能不能", an A-not-A
# question form).
_Q_NEG = {
    "en": re.compile(r"\b(without|not|no)\b|n't\b", re.I),
    "zh": re.compile(r"(?<![能可是有要会行])不(?![能可是有要会行]?吗)|无需|免"),
}
_A_NOT_A = re.compile(r"(.)不\1")
NEG_SCOPE = {"en": 4, "zh": 6}  # words (en) or characters (zh) a negation reaches
_DEICTIC = frozenset("这里 这儿 这边 此处 本中心 直接 现在 here now".split())
MIN_COVERAGE = 0.75  # share of the question's words (days aside) the deciding sentence holds

# Chinese answers echo the question's verb ("能来办事吗？" → "不能。"); English says Yes/No.
_ZH_MODALS = ("可以", "需要", "能", "要", "有", "会", "收", "开门", "开放", "免费", "是")
_ZH_NO = {"有": "没有", "是": "不是"}


@dataclass(frozen=True)
class Verdict:
    answer: str  # "yes" | "no"
    sentence: str  # the sentence that decided it
    lead: str  # what goes in front of the quote ("Yes.", "不能。")


def _scoped_negations(sentence: str, anchors: set[str], lang: str) -> int:
    """Negations followed closely by one of ``anchors`` (question terms or day words)."""
    norm = normalize(sentence)
    reach = NEG_SCOPE[lang]
    count = 0
    for m in _NEG[lang].finditer(norm):
        after = norm[m.end() :]
        window = " ".join(after.split()[:reach]) if lang == "en" else after[:reach]
        if any(contains(window, a) for a in anchors if a):
            count += 1
    return count


def _question_negated(question: str, lang: str) -> bool:
    q = normalize(question)
    if lang == "zh":
        q = _A_NOT_A.sub("", q)
    return _Q_NEG[lang].search(q) is not None


def _lead(answer: str, question: str, lang: str) -> str:
    if lang != "zh":
        return "Yes." if answer == "yes" else "No."
    modal = next((m for m in _ZH_MODALS if m in question), None)
    if modal is None:
        return "是的。" if answer == "yes" else "不是。"
    if answer == "yes":
        return f"{modal}。"
    return f"{_ZH_NO.get(modal, '不' + modal)}。"


_WH = {
    "en": re.compile(r"\b(what|which|where|when|how|who|why)\b", re.I),
    "zh": re.compile(r"几|多少|什么|哪|怎么|怎样|多长|多久|谁|为何|为什么"),
}
_NUMBER = re.compile(r"\d+(?::\d\d)?")


def with_yes_no(question: str, answer: str, lang: str) -> str:
    """An FAQ answer written for a paraphrase ("Which services are free?") with the yes/no its
    own sentences decide for a yes/no question, unless it already starts with one."""
    if answer_polarity(answer) is not None:
        return answer
    verdict = yes_no(question, split_sentences(answer), lang)
    return answer if verdict is None else f"{verdict.lead} {answer}"


def yes_no(question: str, sentences: list[str] | tuple[str, ...], lang: str) -> Verdict | None:
    """The verdict the quoted ``sentences`` decide for a yes/no ``question``, or None."""
    if not is_yes_no_question(question, lang) or _WH[lang].search(question):
        return None
    qn = normalize(question)
    q_days = _day_set(question)
    q_parts = _parts(qn)
    q_numbers = set(_NUMBER.findall(qn))
    q_neg = _question_negated(question, lang)
    day_words = {
        w.removesuffix("s?") for d in q_days for w in _DAY_WORDS[d].split("|") if "(" not in w
    }
    q_terms = terms(question)
    # Words the deciding sentence must contain: all but the day and part-of-day words, which
    # the day logic below handles ("Saturday mornings" ~ "On Saturdays ... 09:00 to 12:30"),
    # single Chinese characters (办, 去, 不: verbs and particles the negation logic reads) and
    # words that point at the kiosk itself ("这里", "here").
    needed = {
        t
        for t in q_terms
        if not any(rx.fullmatch(t) for rx in (*_DAY_RX.values(), *_PARTS.values()))
        and not (len(t) == 1 and not t.isascii())
        and t not in _DEICTIC
    }
    anchors = set(q_terms) | day_words
    votes: list[tuple[str, str]] = []
    for sentence in sentences:
        sn = normalize(sentence)
        if not needed or sum(contains(sentence, t) for t in needed) / len(needed) < MIN_COVERAGE:
            continue
        if _RESTRICT[lang].search(sn):
            return None  # "only"/"只": what the restriction covers needs knowledge we lack
        if q_numbers - set(_NUMBER.findall(sn)):
            return None  # "I am 70", "at 10:00": a condition the sentence does not state
        if q_days:
            s_days = _day_set(sentence)
            if not (q_days & s_days):
                continue  # says nothing about the day asked about, or about other days
        if q_parts and not (q_parts & _parts(sn)):
            return None  # "Thursday evenings": the sentence's hours may or may not cover it
        negative = _scoped_negations(sentence, anchors, lang) > 0
        shared_neg = q_neg and _Q_NEG[lang].search(sn) is not None
        if q_neg and not shared_neg:
            negative = not negative
        votes.append(("no" if negative else "yes", sentence))
    if not votes or len({v for v, _ in votes}) > 1:
        return None  # nothing decides, or sentences disagree
    answer, sentence = votes[0]
    return Verdict(answer, sentence, _lead(answer, question, lang))
