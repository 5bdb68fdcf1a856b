"""Text normalisation and tokenisation shared by FTS5 indexing, FTS5 queries and FAQ matching.

Documents and visitors mix full-width and half-width forms, upper and lower case,
Traditional and Simplified characters (speech recognisers often return
Traditional), so everything that is indexed or compared goes through
:func:`normalize` first: NFKC, lowercase, Traditional→Simplified, single spaces.

Chinese has no spaces, so FTS5's default tokenizer would index a whole clause as
one token. :func:`fts_terms` turns normalised text into index terms for one of
three schemes, chosen per store (see docs/knowledge.md for the measurements):

- ``jieba``: dictionary word segmentation (search mode, which also emits the
  shorter words inside long ones); the FTS5 table uses ``unicode61`` + Porter.
- ``bigram``: every overlapping pair of CJK characters (plus single characters
  for one-character runs), the classic CJK search-engine scheme.
- ``trigram``: FTS5's own ``trigram`` tokenizer over the normalised text; a
  query is split into its 3-character windows.

User text never reaches FTS5 query syntax raw: :func:`fts_query` quotes every
term as an FTS5 string, so ``"``, ``AND``/``OR``/``NEAR``, ``*``, ``:``,
``^`` and parentheses in a question are just text.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable

FTS_SCHEMES = ("jieba", "bigram", "trigram")

_WS = re.compile(r"\s+")
# A CJK ideograph (unified + extension A + compatibility) — the characters segmentation is about.
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
# Runs of word characters: CJK runs and alphanumeric runs are split apart.
_WORDISH = re.compile(f"[{_CJK}]+|[^\\W{_CJK}_]+", re.UNICODE)
_HAS_CJK = re.compile(f"[{_CJK}]")

# Words so common in questions that matching them says nothing about the answer.
# Kept short on purpose: BM25's IDF already discounts frequent words.
_EN_STOP = frozenset(
    "a an and are as at be by can could do does did for from how i if in is it its me my of on or "
    "our please should so than that the their them there these this to us was we were what when "
    "where which who why will with would you your".split()
)
_ZH_STOP = frozenset(
    "的 了 吗 呢 吧 啊 是 我 你 他 她 它 们 在 和 与 及 或 请问 请 "
    "怎么 怎样 如何 什么 哪 哪里 哪些 可以 能 能否 要 有 没有 么".split()
)


class _T2S(dict):
    """Per-character Traditional→Simplified table for ``str.translate``, filled lazily.

    opencc's phrase-level conversion costs ~1 ms per 100 characters, far too slow
    for indexing 100k chunks. Matching only needs both sides converted the same
    way, so we convert character by character through opencc once per distinct
    character and cache the result; ``str.translate`` then runs at C speed.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cc = None
        self._lock = threading.Lock()

    def __missing__(self, code: int) -> str:
        if code < 0x3400:  # nothing below CJK Extension A needs conversion; cache the identity
            self[code] = chr(code)
            return self[code]
        with self._lock:
            if self._cc is None:
                import opencc  # lazy: loads its dictionaries

                self._cc = opencc.OpenCC("t2s")
            converted = self._cc.convert(chr(code))
        self[code] = converted
        return converted


_T2S_TABLE = _T2S()


def to_simplified(text: str) -> str:
    """Traditional → Simplified Chinese, character by character (ASCII passes untouched)."""
    if not _HAS_CJK.search(text):
        return text
    return text.translate(_T2S_TABLE)


def normalize(text: str) -> str:
    """The one canonical form for matching: NFKC, lowercase, Simplified, single spaces, stripped."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = to_simplified(text)
    return _WS.sub(" ", text).strip()


def has_cjk(text: str) -> bool:
    return _HAS_CJK.search(text) is not None


_jieba = None
_jieba_lock = threading.Lock()


def _jieba_cut(text: str) -> list[str]:
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import logging

                import jieba

                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba = jieba
    return _jieba.lcut_for_search(text)


def _cjk_bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


# A hyphenated compound of Latin letters or digits: "wi-fi", "e-mail", "check-in".
# Each part starts with a letter: "9-10" and "401-402" are ranges, not words.
_COMPOUND = re.compile(r"(?<![^\W_])[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)+(?![^\W_])")


def compounds(normalized: str) -> list[str]:
    """Hyphenated compounds written as one word ("wi-fi" → "wifi"): a visitor types "wifi"
    where the document writes "Wi-Fi", so both forms are indexed and searched."""
    return [m.group().replace("-", "") for m in _COMPOUND.finditer(normalized)]


def _words(normalized: str, scheme: str) -> list[str]:
    """Terms of already-normalised text under ``scheme`` (alphanumeric words pass whole;
    a hyphenated compound also as one word)."""
    out: list[str] = []
    for match in _WORDISH.finditer(normalized):
        run = match.group()
        if not _HAS_CJK.match(run):
            out.append(run)
        elif scheme == "jieba":
            out.extend(w for w in _jieba_cut(run) if w.strip())
        elif scheme == "bigram":
            out.extend(_cjk_bigrams(run))
        else:  # trigram: keep the run; FTS5's trigram tokenizer splits it
            out.append(run)
    out.extend(compounds(normalized))
    return out


def fts_document(text: str, scheme: str) -> str:
    """What goes into the FTS5 column for ``text``: normalised, segmented, space-separated."""
    normalized = normalize(text)
    if scheme == "trigram":
        return normalized
    return " ".join(_words(normalized, scheme))


def query_terms(text: str, scheme: str, *, drop_stopwords: bool = True) -> list[str]:
    """Distinct search terms of a question, in order; stopwords dropped unless nothing else left."""
    normalized = normalize(text)
    if scheme == "trigram":
        terms: list[str] = []
        for match in _WORDISH.finditer(normalized):
            run = match.group()
            if _HAS_CJK.match(run):
                terms.extend(run[i : i + 3] for i in range(max(1, len(run) - 2)))
            else:
                terms.append(run)
        # The text is indexed as written: a compound is searched with its hyphen ("wi-fi").
        terms.extend(m.group() for m in _COMPOUND.finditer(normalized))
        # FTS5's trigram tokenizer matches nothing for terms under 3 characters.
        terms = [t for t in terms if len(t) >= 3]
    else:
        terms = _words(normalized, scheme)
    if drop_stopwords:
        kept = [t for t in terms if t not in _EN_STOP and t not in _ZH_STOP]
        if kept:
            terms = kept
    return list(dict.fromkeys(terms))


def quote_fts(term: str) -> str:
    """One term as an FTS5 string literal: double quotes doubled, wrapped in double quotes."""
    return '"' + term.replace('"', '""') + '"'


def fts_query(terms: Iterable[str]) -> str:
    """An FTS5 MATCH expression ORing the quoted terms; "" when there is nothing to search."""
    return " OR ".join(quote_fts(t) for t in terms if t)
