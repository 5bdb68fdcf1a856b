"""The answer language follows the question.

Only Chinese and English are served. A question in a third language (Korean,
Japanese, Russian, French, ...) gets the staff-handoff text in the kiosk's
default language, because nothing in the knowledge is written in that language
and a machine-translated guess is worse than a person. Detection is a cheap
script/word heuristic (microseconds, no model), built on the store's
:func:`runtime.knowledge.language.detect_language`.
"""

from __future__ import annotations

import re

from runtime.knowledge.language import detect_language

_OTHER_SCRIPT = re.compile(
    r"[\u0400-\u04ff\u0590-\u05ff\u0600-\u06ff\u0900-\u097f\u0e00-\u0e7f\u1100-\u11ff\u3040-\u30ff\uac00-\ud7af]"
)
_LATIN_WORD = re.compile(r"[a-zà-ÿ]+", re.IGNORECASE)
_EN_WORDS = frozenset(
    "a an and are at be can could do does for from have how i in is it me my of on open or the "
    "there "
    "to what when where which who why will with you your get much long need any this that".split()
)
# Frequent function words of other Latin-script languages (fr, de, es, it, pt, nl).
_OTHER_WORDS = frozenset(
    "le la les est une des du et où quand pourquoi comment ist der die das und wo wann wie ich "
    "el los las es un una y dónde cuándo cómo qué il è di che dove quando come o os em não onde "
    "het een en waar wanneer hoe zijn vous je nous ouvert geöffnet abierto aperto".split()
)


def question_language(text: str, default: str = "zh") -> str:
    """ "zh", "en", or "other" (a third language), ``default`` when there are no letters."""
    if not text.strip():
        return default
    cjk_lang = detect_language(text, default="")
    if cjk_lang == "zh":
        return "zh"
    if cjk_lang == "ja" or _OTHER_SCRIPT.search(text):
        return "other"
    words = [w.lower() for w in _LATIN_WORD.findall(text)]
    if not words:
        return default
    en = sum(w in _EN_WORDS for w in words)
    other = sum(w in _OTHER_WORDS for w in words)
    if other > en:
        return "other"
    return "en"


def answer_language(question_lang: str, languages: list[str]) -> str:
    """The answer language: the question's if served, else the kiosk default (first listed)."""
    return question_lang if question_lang in languages else languages[0]
