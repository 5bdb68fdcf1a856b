"""Extractive answers: the best passage and its most relevant sentences, quoted with their citation.

This is the ladder's "quoted best passage" step and the text that replaces a
generated claim that fails its check. It needs no model: sentences are scored
by how many of the question's content terms they contain (jieba words for
Chinese, words for English, via the store's tokeniser), with the passage's
retrieval rank as a tie-breaker. The quote keeps the source's own words, so it
can be incomplete but never contradicts the source.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from runtime.knowledge.text import compounds, normalize, query_terms

from .answer_type import answer_type, asking_words, focus_words, states
from .days import day_set
from .groups import groups

_SENT_END = re.compile(r"(?<=[。！？!?])|(?<=[.])(?=\s)|\n+")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{2,}")
_CJK = re.compile(r"[\u3400-\u9fff]")
# Questions about a price: a sentence stating an amount of money is what answers them.
_COST_Q = re.compile(
    r"\b(cost|costs|fee|fees|price|pay|charge)\b|how much|多少钱|费用|收费|多少元", re.I
)
_MARKUP = re.compile(r"\*\*|__|`")  # Markdown emphasis/code markers: not shown to visitors
MAX_QUOTE_CHARS = 400
ROW_OFF_SUBJECT = 0.5  # weight of a table row whose label the question does not name
OTHER_DAY = 0.5  # weight of a sentence about other days than the one asked about
GROUP_BONUS = 0.15  # a sentence about the group of visitors the question names (groups.py)
UNCOUNTED = 0.5  # weight of a sentence that does not count what "how many" asks about
# A sentence stating the kind of answer asked for (docs/answers.md); an amount for "how much"
# keeps the weight the earlier number + money bonuses had together (0.1 + 0.25).
TYPE_BONUS = {
    "money": 0.35,
    "charge": 0.15,
    "place": 0.15,
    "time": 0.15,
    "number": 0.15,
    "duration": 0.15,
    "documents": 0.35,
}


def _row_label(sentence: str) -> str | None:
    """The first cell of a table row, or None for prose."""
    if "|" not in sentence:
        return None
    return sentence.split("|", 1)[0].strip()


def _pieces(text: str) -> list[str]:
    """Sentences of prose lines; a table row stays whole, so a cell is never quoted without
    the row's label ("closed Saturdays and Sundays" belongs to the café, not the hall)."""
    out: list[str] = []
    for line in text.splitlines():
        if "|" in line:
            out.append(line)
        else:
            out.extend(_SENT_END.split(line))
    return out


def _sentences_with_headers(text: str) -> list[tuple[str, tuple[str, ...] | None]]:
    """Sentences and table rows of a passage, each row with its table's header cells."""
    out: list[tuple[str, tuple[str, ...] | None]] = []
    text = _MARKUP.sub("", text)
    in_table = False
    header: tuple[str, ...] | None = None
    for piece in _pieces(text):
        s = piece.strip().strip("-*•").strip()
        if not s or _TABLE_RULE.match(s):
            continue
        is_row = "|" in s
        if is_row and not in_table and not any(ch.isdigit() for ch in s):
            in_table = True  # a table's header row ("Day | Hours"): labels, not a statement
            header = _cells(s)
            continue
        in_table = is_row
        if not is_row:
            header = None
        out.append((s.strip("|").strip(), header if is_row else None))
    return out


def _cells(row: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in row.strip().strip("|").split("|"))


def split_sentences(text: str) -> list[str]:
    """Sentences and table rows of a passage (markdown table rules and blank lines dropped)."""
    return [s for s, _ in _sentences_with_headers(text)]


def readable(sentence: str, passage: str) -> str:
    """A table row as a visitor reads it, with its column names: "Thursday | 08:30–20:00 |
    19:30" under "Day | Counter hours | Last queue ticket" becomes "Thursday: Counter hours
    08:30–20:00; Last queue ticket 19:30." Prose, and rows whose header does not fit, are
    returned unchanged."""
    if "|" not in sentence:
        return sentence
    return _with_header(sentence, dict(_sentences_with_headers(passage)).get(sentence))


def _with_header(sentence: str, header: tuple[str, ...] | None) -> str:
    cells = _cells(sentence)
    if not header or len(header) != len(cells):
        return sentence
    zh = _CJK.search(sentence) is not None
    parts = [
        f"{h} {c}" if h else c
        for h, c in zip(header[1:], cells[1:], strict=True)
        if c and c not in ("—", "-", "–")
    ]
    if not parts:
        return sentence
    return (
        cells[0]
        + ("：" if zh else ": ")
        + ("，" if zh else "; ").join(parts)
        + ("。" if zh else ".")
    )


def body_sentences(passage: str) -> list[str]:
    """Sentences of a chunk without the section heading it starts with."""
    sentences = split_sentences(passage)
    if (
        len(sentences) > 1
        and len(sentences[0]) < 60
        and "|" not in sentences[0]  # a table row that starts the chunk is content
        and not sentences[0].endswith((".", "。", "!", "?", "！", "？"))
    ):
        sentences = sentences[1:]
    return sentences


_ASCII_WORD = re.compile(r"[a-z0-9]+")


@functools.lru_cache(maxsize=1)
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


# Irregular past forms Snowball leaves alone ("kept" is not "keep"), for the verbs a visitor
# or a service page uses. Both sides of every match go through stem(), so this only joins.
_IRREGULAR = dict(
    pair.split(":")
    for pair in (
        "kept:keep paid:pay took:take taken:take brought:bring bought:buy gave:give given:give "
        "got:get gotten:get made:make went:go gone:go held:hold sent:send spent:spend told:tell "
        "sold:sell left:leave found:find lost:lose came:come written:write wrote:write "
        "shown:show done:do chosen:choose drove:drive driven:drive "
        "stolen:steal forgot:forget forgotten:forget broken:break broke:break "
        "met:meet ran:run"
    ).split()
)


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """English Snowball stem ("thursdays" → "thursday", "closes" → "close"), as FTS5's porter
    tokenizer matches, after irregular past forms ("kept" → "keep"); other words pass
    unchanged."""
    if not word.isascii():
        return word
    word = _IRREGULAR.get(word, word)
    return _stemmer().stemWord(word) if len(word) > 3 else word


def terms(text: str) -> set[str]:
    """Content terms of a text (stopwords dropped), normalised; English words stemmed."""
    return {stem(t) for t in query_terms(text, "jieba") if len(t) > 1 or not t.isascii()}


@functools.lru_cache(maxsize=8192)
def _indexed(sentence: str) -> tuple[str, frozenset[str]]:
    """A sentence's normalised text and the stems of its English words."""
    norm = normalize(sentence)
    words = _ASCII_WORD.findall(norm) + compounds(norm)
    return norm, frozenset(stem(w) for w in words)


@functools.lru_cache(maxsize=4096)
def _abbreviation(term: str) -> re.Pattern[str] | None:
    """Chinese abbreviations keep the first characters of a longer name in order: 社保卡 is
    社会保障卡, 医保 is 医疗保险. A term of three or more characters also matches its
    characters in order with at most one character between each pair."""
    if len(term) < 3 or not all(_CJK.match(ch) for ch in term):
        return None
    return re.compile("[^\\W\\d_]?".join(re.escape(ch) for ch in term))


def contains(sentence: str, term: str) -> bool:
    """Whether ``term`` (from :func:`terms`) occurs in ``sentence``: English by stem, as a
    whole word; Chinese as a substring (no spaces between Chinese words) or as the
    abbreviation of a longer name in it."""
    norm, stems = _indexed(sentence)
    if term.isascii() and term.isalnum():
        return term in stems
    if term in norm:
        return True
    rx = _abbreviation(term)
    return rx is not None and rx.search(norm) is not None


_COUNT_WORD = re.compile(
    r"\d+|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty"
    r"|forty|fifty|hundred)\b|[一二三四五六七八九十两百]",
    re.I,
)


def counts(sentence: str, counted: set[str]) -> bool:
    """Whether ``sentence`` puts a number right before one of the ``counted`` terms ("six
    self-service terminals", "3个工作日", "两部电梯"): three words or four characters ahead."""
    norm = normalize(sentence)
    for t in counted:
        if t.isascii():
            words = _ASCII_WORD.findall(norm)
            for i, w in enumerate(words):
                if stem(w) == t and any(_COUNT_WORD.fullmatch(x) for x in words[max(0, i - 3) : i]):
                    return True
        else:
            for m in re.finditer(re.escape(t), norm):
                if _COUNT_WORD.search(norm[max(0, m.start() - 4) : m.start()]):
                    return True
    return False


def overlap(question_terms: set[str], sentence: str) -> float:
    """Share of the question's content terms that occur in ``sentence`` (0..1)."""
    if not question_terms:
        return 0.0
    return sum(1 for t in question_terms if contains(sentence, t)) / len(question_terms)


@dataclass(frozen=True)
class Extract:
    passage_index: int  # which passage (0-based, in the order given)
    text: str  # the quoted sentences, in source order
    score: float  # IDF-weighted term overlap of the best sentence (0..1), for ranking
    sentences: tuple[str, ...] = ()  # the quoted sentences, one by one (table rows whole)


def _weights(question_terms: set[str], sentences: list[str]) -> dict[str, float]:
    """IDF-style weights over the candidate sentences: a term in every sentence ("hall") tells
    little; a rare one ("sundays") decides."""
    n = max(1, len(sentences))
    return {
        t: math.log(1.0 + n / (1.0 + sum(contains(s, t) for s in sentences)))
        for t in question_terms
    }


def _weighted(weights: dict[str, float], sentence: str) -> float:
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    return sum(w for t, w in weights.items() if contains(sentence, t)) / total


def best_extract(
    question: str,
    passages: list[str],
    *,
    focus: str = "",
    max_sentences: int = 2,
    max_chars: int = MAX_QUOTE_CHARS,
    similarity: Callable[[list[str]], list[float]] | None = None,
    semantic_weight: float = 0.5,
) -> Extract | None:
    """The passage with the best-matching sentence, and up to ``max_sentences`` of its sentences.

    Sentences are scored by the IDF-weighted share of the question's terms they contain.
    ``focus`` (a follow-up as typed, e.g. "and on Sundays?") weighs half of the score, so the
    sentence about Sundays beats the one about the previous question's Saturday.
    ``similarity`` (sentences → cosine with the question, from the embedder) blends in meaning
    with ``semantic_weight``, so "cost" finds "The fee is 120 yuan" with no shared word.
    """
    per_passage: list[list[str]] = []
    for passage in passages:
        per_passage.append(body_sentences(passage))
    everything = [s for ss in per_passage for s in ss]
    qw = _weights(terms(question), everything)
    # What a "how many" question counts weighs as much as the rest of the question together
    # ("how many terminals ... in the 24-hour self-service zone": the sentence about the
    # zone's opening hours shares more words but counts nothing).
    counted = {t for t in terms(focus_words(question)) if t in qw}
    if counted:
        rest = sum(w for t, w in qw.items() if t not in counted)
        share = sum(qw[t] for t in counted) or 1.0
        qw = {t: (w * max(1.0, rest / share) if t in counted else w) for t, w in qw.items()}
    fw = _weights(terms(focus), everything) if focus else {}
    # The kind of answer asked for: a sentence stating one (a window, a clock time, an amount)
    # is what answers "which window / what time / how much" (see answer_type.py).
    kind = answer_type(question) or (answer_type(focus) if focus else None)
    sims: dict[str, float] = {}
    if similarity is not None and everything:
        try:
            sims = dict(zip(everything, similarity(everything), strict=True))
        except Exception:  # noqa: BLE001 - meaning is a bonus; lexical scores still work
            sims = {}
    asked_days = day_set(focus) or day_set(question)
    asked_groups = groups(question) | groups(focus)
    best: Extract | None = None
    for i, sentences in enumerate(per_passage):
        scored = [
            ((_weighted(qw, s) + _weighted(fw, s)) / 2 if fw else _weighted(qw, s))
            for s in sentences
        ]
        if sims:
            scored = [
                (1 - semantic_weight) * sc + semantic_weight * max(0.0, sims.get(s, 0.0))
                for sc, s in zip(scored, sentences, strict=True)
            ]
        if kind is not None:
            scored = [
                sc + (TYPE_BONUS[kind] if states(s, kind) else 0.0)
                for sc, s in zip(scored, sentences, strict=True)
            ]
        if asked_groups:
            # "I am 68. Do I pay for a copy?": the sentence on fees waived for visitors aged
            # 65 or over answers it, not the general price.
            scored = [
                sc + (GROUP_BONUS if groups(s) & asked_groups else 0.0)
                for sc, s in zip(scored, sentences, strict=True)
            ]
        if counted:
            # "six self-service terminals" answers "how many terminals"; "windows 309-312
            # and the terminals" states numbers, but not how many terminals there are.
            scored = [
                sc if counts(s, counted) else sc * UNCOUNTED
                for sc, s in zip(scored, sentences, strict=True)
            ]
        # A table row states something about its first cell ("Car park | closed Sundays"):
        # when the question names nothing of that label, the row answers another question.
        asked = terms(question) | terms(focus)
        scored = [
            sc * ROW_OFF_SUBJECT
            if _row_label(s) is not None and not (terms(_row_label(s)) & asked)
            else sc
            for sc, s in zip(scored, sentences, strict=True)
        ]
        # "Thursday" asked: a sentence about Mondays answers another question, one about
        # "Monday to Friday" covers it (ranges expanded, days.py).
        if asked_days:
            scored = [
                sc * OTHER_DAY if (d := day_set(s)) and not (d & asked_days) else sc
                for sc, s in zip(scored, sentences, strict=True)
            ]
        scored = [
            (sc - 0.001 * n, n, s) for n, (sc, s) in enumerate(zip(scored, sentences, strict=True))
        ]
        if not scored:
            continue
        scored.sort(reverse=True)
        # Retrieval's order is a strong prior: a later passage must beat an earlier one's best
        # sentence by 0.05 per rank (0.02 gave 67/98 on the demo set, 0.05 and 0.07 gave 73/98).
        top = scored[0][0] - 0.05 * i
        if best is not None and top <= best.score:
            continue
        # The second sentence adds to the answer; one about another day than the one asked
        # ("Monday: 13:00–17:30" beside "Thursday: 08:30–20:00") only misleads.
        picked = [scored[0]] + [
            x
            for x in scored[1:max_sentences]
            if x[0] > 0 and not (asked_days and (d := day_set(x[2])) and not d & asked_days)
        ]
        quoted = tuple(s for _, _, s in sorted(picked, key=lambda x: x[1]))
        headers = dict(_sentences_with_headers(passages[i]))  # parsed once, not per sentence
        text = " ".join(_with_header(s, headers.get(s)) for s in quoted)
        if len(text) > max_chars:
            text = text[: max_chars - 1].rstrip() + "…"
        best = Extract(i, text, max(0.0, top), quoted)
    return best


def support(question: str, quote: str, context: str = "", ignore: Iterable[str] = ()) -> float:
    """Share of the question's content terms that the quote, read in its ``context`` (the
    document title and section heading it sits under), covers (0..1), for the relevance gate.

    A row "Thursday | 08:30–20:00" under "Opening hours" of "The service hall" answers
    "what time does the hall close on Thursdays?": "hall" is in the title, and the words
    that only ask for a time ("time", "when", "几点") are covered by any clock time.
    Words in ``ignore`` (ones no quote can hold) are left out of the count.
    """
    asked = terms(question) - terms(" ".join(ignore))
    if not asked:
        return 0.0
    kind = answer_type(question)
    typed = asking_words(kind) if states(quote, kind) else frozenset()
    text = f"{context} {quote}"
    return sum(1 for t in asked if t in typed or contains(text, t)) / len(asked)
