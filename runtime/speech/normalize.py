"""Text normalisation for recognised speech, and the error rates scored after it.

Whisper writes Mandarin in Traditional characters about as often as in
Simplified (換一首歌, 廣州市) and writes numbers either way (1-2線城市 for
一二线城市). The kiosk shows and matches Chinese in one configured script and
numbers in the form its knowledge uses (Arabic digits: 88号, 30分钟, 0571), so
every transcript passes through :func:`normalize_transcript` before display and
matching, and error rates are scored on both sides after the same step
(:func:`score_form`), as the issue asks.

Script conversion is OpenCC (opencc-python-reimplemented); the Chinese-numeral
reader is small and local because the general converters we tried turn 十分感谢
into "10分感谢" and drop the leading zero of phone numbers. English number words
(twenty five → 25, three thirty → 3:30, nine am → 9 am) go through text2num's
``alpha2digit`` with two small rules around it: spoken digit strings of four or
more (zero five seven one → 0571) keep their leading zeros, and an hour followed
by minutes becomes a clock time, as the knowledge writes times.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Script = Literal["simplified", "traditional"]
NumberForm = Literal["arabic", "keep"]

_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "兩": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_SMALL_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_BIG_UNITS = {"万": 10_000, "萬": 10_000, "亿": 100_000_000, "億": 100_000_000}
_NUMERAL_CHARS = "".join([*_DIGITS, *_SMALL_UNITS, *_BIG_UNITS])
_RUN = re.compile(f"[{_NUMERAL_CHARS}]+(?:点[{''.join(_DIGITS)}]+)?")
# Words whose numeral characters are not numbers (万一 = "in case", 十分 = "very", ...).
_IDIOMS = (
    "万一",
    "萬一",
    "千万",
    "千萬",
    "十分",
    "一一",
    "三三两两",
    "一五一十",
    "百分百",
    "一百分",
    "不三不四",
    "乱七八糟",
    "七上八下",
    "四面八方",
    "五颜六色",
    "千千万万",
    "一万个",
)
_MINUTE = ("钟", "鐘")


@functools.lru_cache(maxsize=2)
def _opencc(config: str):
    import opencc  # lazy: loads its dictionaries on first use

    return opencc.OpenCC(config)


def convert_script(text: str, script: Script) -> str:
    """All Chinese characters in ``script`` (Simplified: t2s; Traditional: s2t)."""
    if not text:
        return text
    return _opencc("t2s" if script == "simplified" else "s2t").convert(text)


def _parse_positional(run: str) -> int | None:
    """三百零五 → 305, 十一 → 11, 两万三千 → 23000.

    None when the run is not a well-formed number.
    """
    total, section, digit = 0, 0, None
    for ch in run:
        if ch in _DIGITS:
            if digit is not None and digit != 0:
                return None  # two digits in a row inside a positional number: not one number
            digit = _DIGITS[ch]
        elif ch in _SMALL_UNITS:
            section += (1 if digit is None else digit) * _SMALL_UNITS[ch]
            digit = None
        else:  # big unit
            section += digit or 0
            if section == 0:
                return None
            total += section * _BIG_UNITS[ch]
            section, digit = 0, None
    return total + section + (digit or 0)


def _numeral_to_arabic(run: str, min_digit_run: int) -> str | None:
    integer, _, fraction = run.partition("点")
    if any(ch in _SMALL_UNITS or ch in _BIG_UNITS for ch in integer):
        value = _parse_positional(integer)
        if value is None:
            return None
        head = str(value)
    elif len(integer) >= min_digit_run or (fraction and len(integer) >= 1):
        head = "".join(str(_DIGITS[ch]) for ch in integer)  # 零五七一 → 0571 (keeps leading zeros)
    else:
        return None  # a lone 一/三/两 (一楼, 一下, 两个) or 一二线: not rewritten for display
    if fraction:
        head += "." + "".join(str(_DIGITS[ch]) for ch in fraction)
    return head


def chinese_numbers_to_arabic(text: str, *, min_digit_run: int = 3) -> str:
    """Rewrite Chinese numerals as Arabic digits where they are clearly numbers.

    Runs with units (三十, 一百零五, 两万三千) always; bare digit sequences (零五七一,
    二零二四) from ``min_digit_run`` characters on, keeping leading zeros.
    """
    protected: list[tuple[int, int]] = []
    for idiom in _IDIOMS:
        for m in re.finditer(re.escape(idiom), text):
            if idiom == "十分" and text[m.end() : m.end() + 1] in _MINUTE:
                continue  # 三十分钟 / 十分钟 is a number of minutes
            protected.append((m.start(), m.end()))

    def rewrite(m: re.Match[str]) -> str:
        if any(s < m.end() and m.start() < e for s, e in protected):
            return m.group(0)
        converted = _numeral_to_arabic(m.group(0), min_digit_run)
        return m.group(0) if converted is None else converted

    return _RUN.sub(rewrite, text)


_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_DIGIT_WORD = r"(?:zero|one|two|three|four|five|six|seven|eight|nine)"
# Four or more digit words in a row (a phone number, a PIN, a ticket number); "oh" counts as 0.
_SPOKEN_DIGITS = re.compile(
    rf"\b(?:{_DIGIT_WORD}|oh)(?:[ -]+(?:{_DIGIT_WORD}|oh)){{3,}}\b", re.IGNORECASE
)
_HOURS = {
    **{k: int(v) for k, v in _DIGIT_WORDS.items() if k not in ("zero", "oh")},
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_HOUR_WORD = "(?:" + "|".join(sorted(_HOURS, key=len, reverse=True)) + ")"
# Spoken clock times, matched on the words so digits the recogniser already wrote stay as they are:
# "three thirty" → 3:30, "nine oh five" → 9:05, "twelve fifteen" → 12:15, "four forty five" → 4:45.
_CLOCK = re.compile(
    rf"\b({_HOUR_WORD})[ -]+(?:(oh)[ -]+({_DIGIT_WORD})"
    rf"|({'|'.join(_TEENS)})|({'|'.join(_TENS)})(?:[ -]+({_DIGIT_WORD}))?)\b"
    r"(?![ -]+(?:hundred|thousand|million|point|percent))",
    re.IGNORECASE,
)
_OCLOCK = re.compile(rf"\b({_HOUR_WORD}|1[0-2]|[1-9]) ?o'?clock\b", re.IGNORECASE)
_AM_PM = re.compile(rf"\b({_HOUR_WORD})(?= ?(?:[ap]m|[ap]\.m\.)(?:\W|$))", re.IGNORECASE)
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def _clock(m: re.Match[str]) -> str:
    hour = _HOURS[m.group(1).lower()]
    if m.group(2):  # "oh five"
        minutes = int(_DIGIT_WORDS[m.group(3).lower()])
    elif m.group(4):
        minutes = _TEENS[m.group(4).lower()]
    else:
        minutes = _TENS[m.group(5).lower()] + (
            int(_DIGIT_WORDS[m.group(6).lower()]) if m.group(6) else 0
        )
    return f"{hour}:{minutes:02d}"


def _hour(word: str) -> str:
    return str(_HOURS[word.lower()]) if word.lower() in _HOURS else word


def english_numbers_to_arabic(text: str) -> str:
    """Rewrite English number words as the knowledge writes numbers: 25, 3:30, 9 am, 0571.

    Uses text2num's ``alpha2digit`` (which leaves a lone "one" or "two" as a word:
    "one of them", "I have two"). Before it, on the words: spoken digit strings of
    four or more are joined so leading zeros survive (zero five seven one → 0571),
    an hour followed by minutes becomes H:MM (three thirty → 3:30), "nine o'clock"
    9:00 and "two pm" 2 pm. Digits the recogniser already wrote are left alone.
    """
    if not _LATIN_WORD.search(text):
        return text  # nothing to read (Chinese text, digits only): skip the library call
    try:
        from text_to_num import alpha2digit
    except ImportError as exc:
        from runtime.errors import BackendUnavailableError

        raise BackendUnavailableError(
            f"text2num is not installed ({exc.name}); English number words cannot be normalised",
            hint="pip install 'kiosk-assistant[speech]', or set [speech] number_form = \"keep\"",
        ) from None

    text = _SPOKEN_DIGITS.sub(
        lambda m: "".join(_DIGIT_WORDS[w.lower()] for w in re.split(r"[ -]+", m.group(0))), text
    )
    text = _CLOCK.sub(_clock, text)
    text = _OCLOCK.sub(lambda m: f"{_hour(m.group(1))}:00", text)
    text = _AM_PM.sub(lambda m: _hour(m.group(1)), text)
    return alpha2digit(text, "en")


def normalize_transcript(
    text: str, *, script: Script = "simplified", number_form: NumberForm = "arabic"
) -> str:
    """What the kiosk shows and matches: NFKC width, one script, numbers as the knowledge writes
    them (Chinese numerals and English number words alike)."""
    text = unicodedata.normalize("NFKC", text).strip()
    text = convert_script(text, script)
    if number_form == "arabic":
        text = english_numbers_to_arabic(chinese_numbers_to_arabic(text))
    return re.sub(r"\s+", " ", text)


_DIGIT_RANGE = re.compile(r"(\d)[-~～–—](?=\d)")
_PUNCT = re.compile(
    r"[\W_]+", re.UNICODE
)  # anything not a letter or digit (CJK ideographs are letters)


def score_form(text: str, *, script: Script = "simplified") -> str:
    """The form error rates are scored on: normalised, lower case, no punctuation or hyphens."""
    text = convert_script(unicodedata.normalize("NFKC", text), script)
    text = english_numbers_to_arabic(chinese_numbers_to_arabic(text, min_digit_run=2)).lower()
    text = _DIGIT_RANGE.sub(r"\1", text)  # 1-2线 and 一二线 score alike
    return " ".join(_PUNCT.sub(" ", text).split())


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


def tokens(text: str, language: str) -> list[str]:
    """Scoring units: characters for Chinese (Latin words and digit runs stay whole), words
    otherwise."""
    if language == "zh":
        out: list[str] = []
        for word in text.split():
            out.extend(
                re.findall(r"[\u3400-\u9fff\uf900-\ufaff]|[^\u3400-\u9fff\uf900-\ufaff]+", word)
            )
        return [t for t in out if t.strip()]
    return text.split()


@dataclass(frozen=True)
class ErrorRate:
    """Edits over reference length: CER for Chinese, WER for other languages."""

    errors: int
    reference_length: int
    unit: str  # "char" | "word"

    @property
    def rate(self) -> float:
        return self.errors / max(1, self.reference_length)

    @property
    def name(self) -> str:
        return "CER" if self.unit == "char" else "WER"


def error_rate(
    reference: str, hypothesis: str, language: str, *, script: Script = "simplified"
) -> ErrorRate:
    """Levenshtein edits between the texts after :func:`score_form` (rapidfuzz, on tokens)."""
    from rapidfuzz.distance import Levenshtein

    ref = tokens(score_form(reference, script=script), language)
    hyp = tokens(score_form(hypothesis, script=script), language)
    return ErrorRate(
        Levenshtein.distance(ref, hyp), len(ref), "char" if language == "zh" else "word"
    )


def corpus_error_rate(
    pairs: list[tuple[str, str, str]], *, script: Script = "simplified"
) -> dict[str, float]:
    """Pooled rate per language over (reference, hypothesis, language) triples: sum of edits / sum
    of lengths."""
    edits: dict[str, list[int]] = {}
    for ref, hyp, lang in pairs:
        er = error_rate(ref, hyp, lang, script=script)
        acc = edits.setdefault(lang, [0, 0])
        acc[0] += er.errors
        acc[1] += er.reference_length
    return {lang: e / max(1, n) for lang, (e, n) in edits.items()}
