"""Claim check: is each generated sentence supported by, and consistent with, its source passage?

A small model fluently inverts negations ("closed on Mondays" → "yes, it opens on
Monday"), so generated text is never shown on trust. For the answer as a whole
and for each sentence:

- **numbers, times, amounts**: every number in the answer must occur in the
  passages (normalised: full-width digits, "09:00" = "9:00");
- **polarity**: for a yes/no question, the expected polarity is derived from the
  question and the best-matching source sentence (a negation in exactly one
  of them means "no"); an answer that starts with the other word
  contradicts the source. Each answer sentence must also be negated exactly
  when the source sentence that supports it is (presence of a negation, not
  parity: "closed ... not available" is one negative statement);
- **support**: each sentence must share enough content terms with one source
  sentence (lexical support; an embedding cosine counts too when an embedder is
  given).

Any failure replaces the generated text with the quoted passage (pipeline).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runtime.knowledge.text import normalize

from .extractive import body_sentences, overlap, split_sentences, terms

_NUM = re.compile(r"\d+(?:[:.]\d+)?")
_EN_NEG = re.compile(
    r"\b(not|no|never|cannot|can't|won't|isn't|aren't|doesn't|don't|didn't|closed|unavailable|without|"
    r"neither|nor|none|only)\b|n't\b"
)
_ZH_NEG = re.compile(r"不|没|无|未|非|别|禁止|关闭|休息|停止|暂停|除外|仅|只")
_YES = re.compile(
    r"^\W*(yes|yeah|correct|sure)\b|^\W*(是的|是|可以|能|有|对|会|需要)", re.IGNORECASE
)
_NO = re.compile(r"^\W*(no|not|nope)\b|^\W*(不|没|否|无)", re.IGNORECASE)
_YESNO_Q_EN = re.compile(
    r"^\s*(is|are|can|could|do|does|did|will|would|should|may|must|has|have)\b", re.IGNORECASE
)
_YESNO_Q_ZH = re.compile(
    r"吗[？?]?\s*$|(能不能|可不可以|是不是|有没有|要不要|需不需要|可以.{0,12}[？?]$)"
)


_DAY = re.compile(r"(?:mon|tues|wednes|thurs|fri|satur|sun)day|周[一二三四五六日]")


def _days(text: str) -> set[str]:
    """Weekday words of a text ("sunday", "周日"): a time stated for one day is not another's."""
    return set(_DAY.findall(normalize(text).replace("星期天", "周日").replace("星期", "周")))


def negations(text: str, language: str) -> int:
    norm = normalize(text)
    return len((_ZH_NEG if language == "zh" else _EN_NEG).findall(norm))


def numbers(text: str) -> set[str]:
    norm = normalize(text)
    out = set()
    for n in _NUM.findall(norm):
        out.add(
            re.sub(
                r"^0+(\d)", r"\1", n.replace(".", ":") if re.fullmatch(r"\d{1,2}\.\d\d", n) else n
            )
        )
    return out


_MONEY = re.compile(
    r"[$¥￥]\s*(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*(?:yuan|rmb|cny|元|块)", re.IGNORECASE
)


def money(text: str) -> set[str]:
    """Amounts written as money ("¥120", "120 yuan", "120元")."""
    return {a or b for a, b in _MONEY.findall(normalize(text))}


_WANTS_NUMBER = {
    "en": re.compile(
        r"\bhow (much|many|long|late|early)\b|\bwhat time\b|\bcost\b|\bfee\b|\bprice\b",
        re.IGNORECASE,
    ),
    "zh": re.compile(r"多少|几点|几个|几天|几楼|多长|多久|什么时候|哪天"),
}
_HAS_NUMBER = re.compile(r"\d|[一二三四五六七八九十两半]")


def wants_number(question: str, language: str) -> bool:
    """Questions whose answer is a number, time, amount or duration."""
    pattern = _WANTS_NUMBER.get(language)
    return bool(pattern and pattern.search(question))


# A follow-up's carried topic ("周日可以停吗？（停车）", rewrite.py) and the sentences before
# the question itself ("I have a pushchair. Is there a lift at that exit?").
_CARRIED = re.compile(r"\s*[（(][^（）()]*[）)]\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def split_context(question: str) -> tuple[str, str]:
    """(context, ask): the sentences a visitor says about themselves before the question, and
    the question itself ("I'm opening a small noodle shop." / "What's the fee for the
    business licence?"). A carried follow-up topic stays with the ask; one sentence is all ask.
    """
    q = question.strip()
    carried = _CARRIED.search(q)
    body = q[: carried.start()] if carried else q
    parts = [p for p in _SENTENCE_END.split(body) if p.strip()]
    if len(parts) < 2:
        return "", q
    ask = parts[-1].strip() + (carried.group(0) if carried else "")
    return " ".join(p.strip() for p in parts[:-1]), ask


def is_yes_no_question(question: str, language: str) -> bool:
    """Whether the question, read in its last sentence, asks for a yes or a no."""
    _, ask = split_context(question)
    last = _CARRIED.sub("", ask).strip()
    return bool((_YESNO_Q_ZH if language == "zh" else _YESNO_Q_EN).search(last))


def answer_polarity(answer: str) -> str | None:
    if _NO.search(answer):
        return "no"
    if _YES.search(answer):
        return "yes"
    return None


@dataclass
class CheckResult:
    ok: bool
    contradiction: bool = (
        False  # the answer says the opposite of its source (yes/no, negation, numbers)
    )
    problems: list[str] = field(default_factory=list)


def _best_sentence(claim: str, sentences: list[str]) -> tuple[str, float]:
    ct = terms(claim)
    best, score = "", 0.0
    for s in sentences:
        sc = overlap(ct, s)
        if sc > score:
            best, score = s, sc
    return best, score


def check_answer(
    question: str,
    answer: str,
    passages: list[str],
    language: str,
    *,
    min_support: float = 0.4,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    min_cosine: float = 0.75,
) -> CheckResult:
    """Check ``answer`` against ``passages`` (the context the generator saw)."""
    result = CheckResult(ok=True)
    sentences = [s for p in passages for s in body_sentences(p)]
    source_text = " ".join(passages)
    if not answer.strip() or not sentences:
        return CheckResult(ok=False, problems=["empty answer or no source"])
    # Numbers absent from the sources.
    missing = numbers(answer) - numbers(source_text)
    if missing:
        result.ok = False
        result.contradiction = True
        result.problems.append(f"numbers not in the source: {sorted(missing)}")
    # A "how much / what time / 几点" question needs a number in the answer.
    if wants_number(question, language) and not _HAS_NUMBER.search(answer):
        result.ok = False
        result.problems.append(
            "the question asks for a number, time or amount; the answer has none"
        )
    # Amounts of money must be amounts of money in the sources (not window or phone numbers).
    wrong_money = money(answer) - money(source_text)
    if wrong_money:
        result.ok = False
        result.contradiction = True
        result.problems.append(f"amounts not stated as money in the source: {sorted(wrong_money)}")
    # Yes/no polarity against the source sentence that answers the question.
    if is_yes_no_question(question, language):
        said = answer_polarity(answer)
        src, score = _best_sentence(question, sentences)
        if said is not None and score > 0:
            flipped = (negations(question, language) > 0) != (negations(src, language) > 0)
            expected = "no" if flipped else "yes"
            if said != expected:
                result.ok = False
                result.contradiction = True
                result.problems.append(
                    f"answers {said!r} but the source says {expected!r}: {src[:80]!r}"
                )
    # Each sentence supported, with the same negation parity as its support.
    claims = [c for c in split_sentences(answer) if terms(c)]
    cosines = None
    if embed is not None and claims:
        try:
            cv = embed(claims)
            sv = embed(sentences)
            cosines = (cv @ sv.T).max(axis=1)
        except Exception:  # noqa: BLE001 - the embedder is optional here; lexical support still applies
            cosines = None
    contentful = 0
    for i, claim in enumerate(claims):
        body = _YES.sub("", _NO.sub("", claim)).strip(" ,.，。")
        if not terms(body):
            continue  # a bare "Yes." / "No." is judged by the polarity check above
        contentful += 1
        src, score = _best_sentence(body, sentences)
        claim_numbers = numbers(body)
        if claim_numbers:
            # Numbers must be stated together with what they are about: "open on Sundays
            # 09:00-12:30" is not supported by "Saturday | 09:00-12:30".
            days = _days(body)
            together = [x for x in sentences if claim_numbers <= numbers(x) and days <= _days(x)]
            words = terms(_NUM.sub(" ", body))
            best_together = max((overlap(words, x) for x in together), default=0.0)
            if not together or (words and best_together < min_support):
                result.ok = False
                result.contradiction = True
                result.problems.append(
                    f"numbers not stated with these words in the source: {claim[:80]!r}"
                )
                continue
        supported = score >= min_support or (
            cosines is not None and float(cosines[i]) >= min_cosine
        )
        if not supported:
            result.ok = False
            result.problems.append(f"unsupported: {claim[:80]!r}")
            continue
        if src and (negations(body, language) > 0) != (negations(src, language) > 0):
            result.ok = False
            result.contradiction = True
            result.problems.append(
                f"negation differs from the source: {claim[:80]!r} vs {src[:80]!r}"
            )
    if contentful == 0:  # "不" / "Yes." alone: nothing the visitor could check against the source
        result.ok = False
        result.problems.append("no statement besides yes/no")
    return result
